import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Window } from "./types";

// Order events per tumbling window of event time (from /api/stats), drawn
// with uPlot: created once, then fed new data on every snapshot.
const SERIES = [
  { key: "placed", stroke: "#4a5563" },
  { key: "confirmed", stroke: "#17692d" },
  { key: "rejected", stroke: "#c0392b" },
  { key: "shipped", stroke: "#1d4c8c" },
  { key: "cancelled", stroke: "#9aa3ad" },
] as const;
const HEIGHT = 170;

function toData(windows: Window[]): uPlot.AlignedData {
  return [
    windows.map((w) => Date.parse(w.start) / 1000),
    ...SERIES.map((s) => windows.map((w) => w[s.key])),
  ];
}

export function ThroughputChart({ title, windows, testId }: { title: string; windows: Window[]; testId: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const options: uPlot.Options = {
      width: element.clientWidth || 560,
      height: HEIGHT,
      series: [{}, ...SERIES.map((s) => ({ label: s.key, stroke: s.stroke, width: 1.5 }))],
      scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
    };
    plot.current = new uPlot(options, toData(windows), element);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: element.clientWidth, height: HEIGHT }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // Created once; the effect below feeds it new windows.
  }, []);

  useEffect(() => {
    plot.current?.setData(toData(windows));
  }, [windows]);

  const placed = windows.reduce((n, w) => n + w.placed, 0);
  return (
    <section className="chart">
      <h2>{title}</h2>
      <div ref={box} data-testid={testId} data-placed={placed} />
    </section>
  );
}
