import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export type Series = { label: string; color: string; values: (number | null)[] };

const HEIGHT = 160;

// A uPlot line chart, created once and fed new data on every render. Its
// own legend is off: it shows "--" unless hovered. The legend below shows
// each series' latest value instead.
export function LineChart({
  title,
  times,
  series,
  format,
  testId,
}: {
  title: string;
  /** Unix seconds. */
  times: number[];
  series: Series[];
  format: (value: number) => string;
  testId: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = [times, ...series.map((s) => s.values)] as uPlot.AlignedData;

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const styles = getComputedStyle(document.documentElement);
    const axis = { stroke: styles.getPropertyValue("--muted").trim() || "#6b7685", grid: { stroke: "rgba(127,127,127,.15)" } };
    plot.current = new uPlot(
      {
        width: element.clientWidth || 480,
        height: HEIGHT,
        legend: { show: false },
        series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5 }))],
        axes: [axis, axis],
        scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
      },
      data,
      element,
    );
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: element.clientWidth, height: HEIGHT }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // Created once; the effect below feeds it.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  useEffect(() => {
    plot.current?.setData(data);
  });

  return (
    <section className="chart card">
      <h2>{title}</h2>
      <div ref={box} data-testid={testId} />
      <ul className="legend" data-testid={`${testId}-legend`}>
        {series.map((s) => {
          const latest = [...s.values].reverse().find((v) => v != null);
          return (
            <li key={s.label}>
              <span className="swatch" style={{ background: s.color }} />
              {s.label} <strong data-series={s.label}>{latest == null ? "–" : format(latest)}</strong>
            </li>
          );
        })}
      </ul>
    </section>
  );
}
