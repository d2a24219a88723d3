// Shared building blocks for the Poolscope dashboards: datasource references, template variables,
// label filters and panel helpers. Every panel goes through these helpers so the conventions the
// dashboard test and grafana's dashboard-linter check (a unit and a description on every panel, the
// templated datasource, $__rate_interval in every rate/increase, job/instance matchers) hold by
// construction rather than by review.
import * as common from '@grafana/grafana-foundation-sdk/common';
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import * as stat from '@grafana/grafana-foundation-sdk/stat';
import * as table from '@grafana/grafana-foundation-sdk/table';
import * as timeseries from '@grafana/grafana-foundation-sdk/timeseries';

/** Provisioned datasources (grafana/provisioning/datasources/datasources.yml): fixed uids and names. */
export const PROMETHEUS_UID = 'prometheus';
export const PROMETHEUS_NAME = 'Prometheus';
export const ALERTMANAGER_UID = 'alertmanager';
export const ALERTMANAGER_NAME = 'Alertmanager';

/** Pool health thresholds: the Poolscope defaults (POOLSCOPE_HEALTH_WARNING/CRITICAL_THRESHOLD) and alerts. */
export const UTILIZATION_WARNING = 0.75;
export const UTILIZATION_CRITICAL = 0.9;

/**
 * Thresholds of the pool signal alerts (prometheus/rules/pool-signals.yml), drawn on the pool dashboard. The
 * rules are hand-written YAML: test/stack/dashboards.test.ts reads both and fails when they disagree.
 */
export const POOL_SIGNALS = {
  /** PoolSaturatedSustained: share of the window spent at capacity. */
  saturatedShare: 0.5,
  /** PoolConnectionCloseStorm (cause errors): closes by error or by the server per window, in pool sizes… */
  closeStormPools: 2,
  /** …over this window (the rule's increase() range). */
  closeStormWindowSeconds: 300,
  /** PoolConnectionCloseStorm (cause churn): share of acquires that open a new connection. */
  churnNewShare: 0.5,
} as const;

/**
 * SLO burn rates drawn on the HTTP dashboard: the slowest burn that files a ticket and the slowest that pages
 * (factors derived from prometheus/slo.yaml's burn_rate_alerts; test/stack/dashboards.test.ts checks them).
 */
export const SLO_BURN_TICKET = 1;
export const SLO_BURN_PAGE = 6;

export const DASHBOARD_TAG = 'poolscope';
export const POOL_LABEL = 'db_client_connection_pool_name';

/** Every panel queries through the datasource variable, which defaults to the provisioned Prometheus. */
export const DATASOURCE: common.DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

/** Label filters. The linter requires `job=~"$job"` and `instance=~"$instance"` in every selector. */
export const SERVICE = `job=~"$job", instance=~"$instance"`;
export const POOL = `${SERVICE}, ${POOL_LABEL}=~"$pool"`;

export function datasourceVariable(): dashboard.DatasourceVariableBuilder {
  return new dashboard.DatasourceVariableBuilder('datasource')
    .label('Data source')
    .type('prometheus')
    .current({ selected: true, text: PROMETHEUS_NAME, value: PROMETHEUS_UID });
}

/**
 * A multi-select, include-all label variable; `.+` as "All" so matchers never select a missing label, unless
 * `allValue` says otherwise.
 */
export function labelVariable(name: string, label: string, query: string, allValue = '.+'): dashboard.QueryVariableBuilder {
  return new dashboard.QueryVariableBuilder(name)
    .label(label)
    .query(query)
    .definition(query)
    .datasource(DATASOURCE)
    .multi(true)
    .includeAll(true)
    .allValue(allValue)
    .current({ selected: true, text: ['All'], value: ['$__all'] })
    .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
    .sort(dashboard.VariableSort.AlphabeticalAsc);
}

/** job, instance and pool variables for dashboards about pools (the job list comes from pool metrics). */
export function poolVariables(): dashboard.QueryVariableBuilder[] {
  return [
    labelVariable('job', 'Job', 'label_values(db_client_connection_max, job)'),
    labelVariable('instance', 'Instance', 'label_values(db_client_connection_max{job=~"$job"}, instance)'),
    labelVariable('pool', 'Pool', `label_values(db_client_connection_max{job=~"$job"}, ${POOL_LABEL})`),
  ];
}

/** Links every Poolscope dashboard to the others, carrying the time range and variables along. */
export function dashboardLinks(): dashboard.DashboardLinkBuilder {
  return new dashboard.DashboardLinkBuilder('Poolscope')
    .type(dashboard.DashboardLinkType.Dashboards)
    .tags([DASHBOARD_TAG])
    .asDropdown(false)
    .includeVars(true)
    .keepTime(true)
    .targetBlank(false)
    .icon('external link')
    .tooltip('');
}

/** The common dashboard frame: fixed uid, read-only (provisioned from files), tags, links, time. */
export function baseDashboard(uid: string, title: string, description: string): dashboard.DashboardBuilder {
  return new dashboard.DashboardBuilder(title)
    .uid(uid)
    .description(description)
    .tags([DASHBOARD_TAG])
    .readonly()
    .tooltip(dashboard.DashboardCursorSync.Crosshair)
    .time({ from: 'now-1h', to: 'now' })
    .refresh('10s')
    .timezone('browser')
    .link(dashboardLinks())
    .annotations([builtInAnnotations(), firingAlertsAnnotation()])
    .withVariable(datasourceVariable());
}

/** Grafana's own annotations and alerts (what every exported dashboard carries; Grafana expects the list). */
function builtInAnnotations(): dashboard.AnnotationQueryBuilder {
  return new dashboard.AnnotationQueryBuilder()
    .name('Annotations & Alerts')
    .builtIn(1)
    .datasource({ type: 'grafana', uid: '-- Grafana --' })
    .enable(true)
    .hide(true)
    .iconColor('rgba(0, 211, 255, 1)')
    .type('dashboard');
}

/** Marks when Prometheus alerts fired on every time series panel, so a spike lines up with its alert. */
function firingAlertsAnnotation(): dashboard.AnnotationQueryBuilder {
  return new dashboard.AnnotationQueryBuilder()
    .name('Firing alerts')
    .datasource(DATASOURCE)
    .enable(true)
    .hide(false)
    .iconColor('red')
    .expr('ALERTS{alertstate="firing", job=~"$job"}')
    .step('15s')
    .titleFormat('{{alertname}} ({{severity}})')
    .textFormat(`{{job}} {{${POOL_LABEL}}}`)
    .tagKeys('severity,alertname');
}

export interface Query {
  expr: string;
  legend: string;
  /** Instant, table-formatted query (tables); default: a range query as time series. */
  table?: boolean;
}

function target(q: Query, refId: string): prometheus.DataqueryBuilder {
  const b = new prometheus.DataqueryBuilder()
    .datasource(DATASOURCE)
    .refId(refId)
    .expr(q.expr)
    .legendFormat(q.legend)
    .editorMode(prometheus.QueryEditorMode.Code);
  if (q.table) return b.instant().format(prometheus.PromQueryFormat.Table);
  return b.range();
}

function withTargets<T extends { withTarget(t: prometheus.DataqueryBuilder): T }>(panel: T, queries: Query[]): T {
  queries.forEach((q, i) => panel.withTarget(target(q, String.fromCharCode(65 + i))));
  return panel;
}

const absolute = (steps: dashboard.Threshold[]) =>
  new dashboard.ThresholdsConfigBuilder().mode(dashboard.ThresholdsMode.Absolute).steps(steps);

/** green below `warning`, orange from `warning`, red from `critical` (if the signal has a critical level). */
export function thresholds(warning: number, critical?: number): dashboard.ThresholdsConfigBuilder {
  return absolute([
    { value: null, color: 'green' },
    { value: warning, color: 'orange' },
    ...(critical === undefined ? [] : [{ value: critical, color: 'red' }]),
  ]);
}

export interface PanelSpec {
  title: string;
  description: string;
  unit: string;
  queries: Query[];
  width?: number;
  height?: number;
}

export interface TimeseriesSpec extends PanelSpec {
  min?: number;
  max?: number;
  /** Draw warning/critical thresholds (or a warning only) as lines and shaded areas. */
  thresholds?: [number, number] | [number];
  stack?: boolean;
}

export function timeseriesPanel(spec: TimeseriesSpec): timeseries.PanelBuilder {
  const p = new timeseries.PanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .unit(spec.unit)
    .span(spec.width ?? 12)
    .height(spec.height ?? 8)
    .lineWidth(1)
    .fillOpacity(10)
    .showPoints(common.VisibilityMode.Never)
    .spanNulls(false)
    .legend(
      new common.VizLegendOptionsBuilder()
        .showLegend(true)
        .displayMode(common.LegendDisplayMode.Table)
        .placement(common.LegendPlacement.Bottom)
        .calcs(['lastNotNull', 'max']),
    )
    .tooltip(new common.VizTooltipOptionsBuilder().mode(common.TooltipDisplayMode.Multi).sort(common.SortOrder.Descending));
  if (spec.min !== undefined) p.min(spec.min);
  if (spec.max !== undefined) p.max(spec.max);
  if (spec.thresholds) {
    p.thresholds(thresholds(spec.thresholds[0], spec.thresholds[1])).thresholdsStyle(
      new common.GraphThresholdsStyleConfigBuilder().mode(common.GraphThresholdsStyleMode.LineAndArea),
    );
  } else {
    p.thresholds(absolute([{ value: null, color: 'green' }]));
  }
  if (spec.stack) {
    p.stacking(new common.StackingConfigBuilder().mode(common.StackingMode.Normal)).fillOpacity(30);
  }
  return withTargets(p, spec.queries);
}

export interface StatSpec extends PanelSpec {
  thresholds: [number, number];
  mappings?: dashboard.ValueMapping[];
}

export function statPanel(spec: StatSpec): stat.PanelBuilder {
  const p = new stat.PanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .unit(spec.unit)
    .span(spec.width ?? 6)
    .height(spec.height ?? 6)
    .min(0)
    .thresholds(thresholds(...spec.thresholds))
    .colorScheme(new dashboard.FieldColorBuilder().mode(dashboard.FieldColorModeId.Thresholds))
    .colorMode(common.BigValueColorMode.Background)
    .graphMode(common.BigValueGraphMode.None)
    .textMode(common.BigValueTextMode.ValueAndName)
    .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false));
  if (spec.mappings) p.mappings(spec.mappings);
  return withTargets(p, spec.queries);
}

export interface TableSpec extends PanelSpec {
  /** Columns to hide (labels that say nothing here). */
  hide?: string[];
  /** Column display names, by field name. */
  rename?: Record<string, string>;
  sortBy?: string;
}

export function tablePanel(spec: TableSpec): table.PanelBuilder {
  const p = new table.PanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .unit(spec.unit)
    .span(spec.width ?? 24)
    .height(spec.height ?? 8)
    .thresholds(absolute([{ value: null, color: 'text' }]))
    .filterable(true)
    .withTransformation({
      id: 'organize',
      options: {
        excludeByName: Object.fromEntries((spec.hide ?? []).map((name) => [name, true])),
        renameByName: spec.rename ?? {},
        indexByName: {},
      },
    });
  if (spec.sortBy) p.sortBy([new common.TableSortByFieldStateBuilder().displayName(spec.sortBy).desc(false)]);
  return withTargets(p, spec.queries);
}

/** A row header: groups the panels that follow it. */
export function row(title: string): dashboard.RowBuilder {
  return new dashboard.RowBuilder(title);
}

/** `histogram_quantile(q, …)` over a histogram's buckets, per `by` labels, with $__rate_interval. */
export function quantile(q: number, metric: string, filter: string, by: string[]): string {
  return `histogram_quantile(${q}, sum by (${[...by, 'le'].join(', ')}) (rate(${metric}_bucket{${filter}}[$__rate_interval])))`;
}

/** `sum by (…) (rate(metric{filter}[$__rate_interval]))`. */
export function sumRate(metric: string, filter: string, by: string[]): string {
  return `sum by (${by.join(', ')}) (rate(${metric}{${filter}}[$__rate_interval]))`;
}
