// What the charts plot over time, kept from the snapshots the page
// receives (one a second): the log's backlog, and the rates in (appended)
// and out (processed) from two consecutive readings of the log's
// counters. Bounded: the last LIMIT points.
import type { Pipeline } from "../types";

export const LIMIT = 300;

export type Point = { t: number; lag: number | null; appended: number | null; processed: number | null };

export type Reading = { t: number; appended: number | null; processed: number | null };

export type History = { points: Point[]; last: Reading | null };

export const emptyHistory: History = { points: [], last: null };

function perSecond(now: number | null, then: number | null, seconds: number): number | null {
  if (now == null || then == null || seconds <= 0 || now < then) return null;
  return (now - then) / seconds;
}

/** The history with the snapshot taken at `t` (seconds) added. */
export function record(history: History, t: number, pipeline: Pipeline): History {
  const reading: Reading = { t, appended: pipeline.appended ?? null, processed: pipeline.processed ?? null };
  const last = history.last;
  if (last && t <= last.t) return history;
  const seconds = last ? t - last.t : 0;
  const point: Point = {
    t,
    lag: pipeline.lag ?? null,
    appended: last ? perSecond(reading.appended, last.appended, seconds) : null,
    processed: last ? perSecond(reading.processed, last.processed, seconds) : null,
  };
  const points = [...history.points, point];
  return { points: points.length > LIMIT ? points.slice(points.length - LIMIT) : points, last: reading };
}
