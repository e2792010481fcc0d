// The results of one benchmark run, as bench/results/<timestamp>.json holds them.
import type { Anomaly } from './anomalies.js';
import type { ScalingResults } from './dataplane-scaling.js';
import type { ContenderResult, MachineFacts, MetricDef, SuiteSettings } from './suite.js';

export interface BenchResults {
  /** 2: one CPU basis for every contender, the knb-style scenarios, anomalies. */
  schema: 1 | 2;
  /** What was run: `npm run bench` (full), `-- quick`, or `-- scaling` alone. */
  kind: 'full' | 'quick' | 'scaling';
  startedAt: string;
  finishedAt: string;
  durationSec: number;
  /** Arguments after `node dist/bench/run.js`. */
  argv: string[];
  machine: MachineFacts;
  settings?: SuiteSettings;
  metrics: readonly MetricDef[];
  reference: string;
  contenders: ContenderResult[];
  scaling?: ScalingResults;
  /** Scaling step failed as a whole (the rest of the run is still reported). */
  scalingError?: string;
  /** What looks wrong in this run's own figures (bench/anomalies.ts). */
  anomalies?: Anomaly[];
  notes: string[];
}

