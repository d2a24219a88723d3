import 'node:crypto'; import 'node:http'; import 'node:async_hooks';
