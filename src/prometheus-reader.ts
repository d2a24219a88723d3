import { MetricReader, type MetricProducer, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { PoolscopeLogger } from './logger.js';
import { serializeResourceMetrics } from './prometheus-exposition.js';

/** A pull reader: collection happens only when `/metrics` is scraped, so idle apps pay nothing. */
export class PrometheusPullReader extends MetricReader {
  constructor(
    private readonly logger: PoolscopeLogger,
    private readonly transform: (metrics: ResourceMetrics) => ResourceMetrics = (m) => m,
    metricProducers: MetricProducer[] = [],
  ) {
    super({ metricProducers });
  }

  async scrape(): Promise<string> {
    const { resourceMetrics, errors } = await this.collect();
    if (errors.length > 0) {
      this.logger.warn('collect:errors', `poolscope: ${errors.length} error(s) during metric collection: ${String(errors[0])}`);
    }
    return serializeResourceMetrics(this.transform(resourceMetrics));
  }

  protected override async onForceFlush(): Promise<void> {}

  protected override async onShutdown(): Promise<void> {}
}
