/*
 * The meter provider Poolscope registers as the API's global, apart from the one of its own instruments. What
 * the application records through `@opentelemetry/api` while it has no SDK of its own is served with
 * Poolscope's metrics, through a producer on each of Poolscope's readers. Once the application registers an
 * SDK's provider (global-providers.ts hands the global over), none of it is collected any more: instrumentations
 * constructed before that SDK started took their meters from this global, and while one provider held theirs
 * and Poolscope's, every scrape ran their callbacks, which reset the application's own event-loop readings
 * (utilization read 1, the delay series vanished) and copied its runtime metrics onto Poolscope's /metrics
 * (found by a coexistence review with NodeSDK and auto-instrumentations-node).
 */
import type { Resource } from '@opentelemetry/resources';
import {
  MeterProvider,
  MetricReader,
  type AggregationSelector,
  type AggregationTemporalitySelector,
  type CollectionResult,
  type MetricProducer,
  type ViewOptions,
} from '@opentelemetry/sdk-metrics';

/** A reader that only collects when one of Poolscope's readers does; nothing to flush or shut down. */
class SourceReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}

  protected override async onShutdown(): Promise<void> {}
}

/** The selectors of a Poolscope reader whose temporality the application's metrics must follow (OTLP's). */
export interface ReaderSelectors {
  aggregationSelector?: AggregationSelector;
  aggregationTemporalitySelector?: AggregationTemporalitySelector;
}

export class ApplicationMeters {
  readonly provider: MeterProvider;
  private readonly readers: SourceReader[];
  private collecting = true;

  /** One source per Poolscope reader, in the same order (`selectors` of each, e.g. its exporter's). */
  constructor(private readonly resource: Resource, views: ViewOptions[], selectors: ReaderSelectors[]) {
    this.readers = selectors.map((s) => new SourceReader(s));
    this.provider = new MeterProvider({ resource, readers: this.readers, views });
  }

  /** The producer of the i-th reader given to the constructor. */
  producer(i: number): MetricProducer {
    const reader = this.readers[i]!;
    return {
      collect: async (options): Promise<CollectionResult> => {
        if (!this.collecting) return this.empty();
        try {
          return await reader.collect(options);
        } catch {
          // Shut down while a last export collected: that export goes without the application's metrics.
          return this.empty();
        }
      },
    };
  }

  /** The application registered its own SDK: nothing recorded on this provider is collected from now on. */
  handOver(): void {
    this.collecting = false;
  }

  async shutdown(): Promise<void> {
    this.collecting = false;
    await this.provider.shutdown().catch(() => undefined);
  }

  private empty(): CollectionResult {
    return { resourceMetrics: { resource: this.resource, scopeMetrics: [] }, errors: [] };
  }
}
