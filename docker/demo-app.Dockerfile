# syntax=docker/dockerfile:1
# The Poolscope demo service for docker-compose.yml: an Express + pg app with no telemetry code, run under
# `node --import ./dist/register.js` (Poolscope's zero-code entry), built from this repository.
# NODE_IMAGE is pinned in one place, docker-compose.yml (x-images) / .env.example, and passed as a build arg.
ARG NODE_IMAGE
FROM ${NODE_IMAGE}
WORKDIR /app
# Dependencies first, so source edits reuse the cached layer. The demo's express and pg are devDependencies
# of the package, and tsc builds dist/, so this is a full install.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts/bundle.mjs ./scripts/
COPY demo ./demo
RUN npm run build
ENV NODE_ENV=production
USER node
# 3000: the demo's HTTP API; 9464: Poolscope's /metrics and /health.
EXPOSE 3000 9464
CMD ["node", "--import", "./dist/register.js", "demo/app.mjs"]
