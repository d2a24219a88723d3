import { MetricReader, type MetricProducer, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { errorText, type PoolscopeLogger } from '../../logger.js';
import { serializeResourceMetrics } from './exposition.js';

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
      this.logger.warn('collect:errors', `poolscope: ${errors.length} error(s) during metric collection: ${errorText(errors[0])}`);
    }
    // One key for all name conflicts: an application registering hundreds of clashing metrics costs one
    // line per logger interval, not one per scrape and metric.
    return serializeResourceMetrics(this.transform(resourceMetrics),
      (message) => this.logger.warn('exposition:conflict', `poolscope: ${message}`));
  }

  protected override async onForceFlush(): Promise<void> {}

  protected override async onShutdown(): Promise<void> {}
}
