/**
 * The service graph: every service a node, every caller -> callee pair of the last minute an
 * edge, laid out left to right by call depth (d3-force with an x pull per depth, so a new service
 * does not reshuffle the others). Node positions are kept between refreshes. Each node is a link
 * to its service page, reachable with Tab; the same data is in the table under the picture.
 */
import { forceCollide, forceLink, forceSimulation, forceX, forceY, type SimulationLinkDatum, type SimulationNodeDatum } from 'd3-force';
import { useMemo, useRef } from 'preact/hooks';
import { fmtMs, fmtPct, fmtRps, health, type Graph, type GraphNode } from './api';

const NODE_W = 188;
const NODE_H = 74;
const COL = 400;

interface SimNode extends SimulationNodeDatum {
  id: string;
  depth: number;
}

export const OUTSIDE = 'unknown';
export const label = (name: string): string => (name === OUTSIDE ? 'outside the mesh' : name);

/** Call depth of each node: clients and services nobody calls first, then what they call. */
function depths(g: Graph): Map<string, number> {
  const d = new Map<string, number>();
  const callers = new Map<string, string[]>();
  for (const e of g.edges) (callers.get(e.destination) ?? callers.set(e.destination, []).get(e.destination)!).push(e.source);
  const visit = (n: string, seen: Set<string>): number => {
    const known = d.get(n);
    if (known !== undefined) return known;
    if (seen.has(n)) return 0;
    seen.add(n);
    let depth = 0;
    for (const c of callers.get(n) ?? []) depth = Math.max(depth, visit(c, seen) + 1);
    d.set(n, depth);
    return depth;
  };
  for (const n of g.nodes) visit(n.name, new Set());
  return d;
}

function layout(g: Graph, prev: Map<string, { x: number; y: number }>): Map<string, { x: number; y: number }> {
  const dep = depths(g);
  const perDepth = new Map<number, number>();
  const nodes: SimNode[] = g.nodes.map((n) => {
    const depth = dep.get(n.name) ?? 0;
    const i = perDepth.get(depth) ?? 0;
    perDepth.set(depth, i + 1);
    const p = prev.get(n.name);
    return { id: n.name, depth, x: p?.x ?? depth * COL, y: p?.y ?? i * (NODE_H + 50) };
  });
  const links: SimulationLinkDatum<SimNode>[] = g.edges.map((e) => ({ source: e.source, target: e.destination }));
  const sim = forceSimulation(nodes)
    .force('x', forceX<SimNode>((n) => n.depth * COL).strength(1))
    .force('y', forceY(0).strength(0.05))
    .force('link', forceLink<SimNode, SimulationLinkDatum<SimNode>>(links).id((n) => n.id).strength(0.05))
    .force('collide', forceCollide((NODE_H + 40) / 2).strength(1))
    .stop();
  sim.alpha(prev.size ? 0.3 : 1);
  for (let i = 0; i < 200; i++) sim.tick();
  return new Map(nodes.map((n) => [n.id, { x: n.x as number, y: n.y as number }]));
}

const STATE_ORDER = ['ready', 'pending', 'not-ready', 'ejected', 'disconnected', 'static'] as const;

function endpointSummary(n: GraphNode): string {
  if (n.endpoints.length === 0) return n.kind === 'clients' ? 'no sidecar' : 'no endpoints';
  const counts = new Map<string, number>();
  for (const e of n.endpoints) counts.set(e.state, (counts.get(e.state) ?? 0) + 1);
  return STATE_ORDER.filter((s) => counts.has(s))
    .map((s) => `${counts.get(s)} ${s}`)
    .join(', ');
}

function nodeHealth(n: GraphNode): string {
  if (n.endpoints.some((e) => e.state === 'ejected' || e.state === 'disconnected' || e.state === 'not-ready')) return 'warn';
  return health(n.inbound?.successRate);
}

export function ServiceGraph({ graph }: { graph: Graph }) {
  const positions = useRef(new Map<string, { x: number; y: number }>());
  const pos = useMemo(() => {
    const p = layout(graph, positions.current);
    positions.current = p;
    return p;
  }, [graph]);
  if (graph.nodes.length === 0) return <p class="empty">No services yet: start sidecars or apply policies.</p>;
  let minX = Infinity,
    minY = Infinity,
    maxX = -Infinity,
    maxY = -Infinity;
  for (const { x, y } of pos.values()) {
    minX = Math.min(minX, x - NODE_W / 2);
    maxX = Math.max(maxX, x + NODE_W / 2);
    minY = Math.min(minY, y - NODE_H / 2);
    maxY = Math.max(maxY, y + NODE_H / 2);
  }
  const pad = 40;
  const vb = `${minX - pad} ${minY - pad} ${maxX - minX + 2 * pad} ${maxY - minY + 2 * pad}`;
  return (
    <svg class="graph" viewBox={vb} role="group" aria-label="Service graph: services and the calls between them in the last minute" style={{ maxHeight: `${Math.max(320, maxY - minY + 2 * pad)}px` }}>
      <defs>
        {(['good', 'warn', 'bad', 'idle'] as const).map((h) => (
          <marker id={`arrow-${h}`} viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" class={`arrow ${h}`}>
            <path d="M 0 0 L 10 5 L 0 10 z" />
          </marker>
        ))}
      </defs>
      {graph.edges.map((e) => {
        const a = pos.get(e.source);
        const b = pos.get(e.destination);
        if (!a || !b) return null;
        const h = health(e.successRate);
        const x1 = a.x + NODE_W / 2;
        const x2 = b.x - NODE_W / 2 - 2;
        const back = x2 < x1;
        const path = back
          ? `M ${a.x} ${a.y + NODE_H / 2} C ${a.x} ${a.y + NODE_H * 1.6}, ${b.x} ${b.y + NODE_H * 1.6}, ${b.x} ${b.y + NODE_H / 2 + 2}`
          : `M ${x1} ${a.y} C ${(x1 + x2) / 2} ${a.y}, ${(x1 + x2) / 2} ${b.y}, ${x2} ${b.y}`;
        const mx = back ? (a.x + b.x) / 2 : (x1 + x2) / 2;
        // Above the curve's higher end, so the label never sits on the line.
        const my = back ? Math.max(a.y, b.y) + NODE_H * 1.3 : Math.min(a.y, b.y) - 4;
        const text = `${fmtRps(e.rps)} rps · ${fmtPct(e.successRate)} · p99 ${fmtMs(e.p99Ms)}`;
        return (
          <g class={`edge ${h}`} data-edge={`${e.source}->${e.destination}`}>
            <title>{`${label(e.source)} → ${label(e.destination)}: ${text} (last ${graph.windowSeconds} s)`}</title>
            <path d={path} marker-end={`url(#arrow-${h})`} style={{ strokeWidth: Math.min(6, 1.5 + Math.log10(1 + e.rps) * 1.5) }} />
            <text x={mx} y={my - 6} class="edge-label" text-anchor="middle">
              {text}
            </text>
          </g>
        );
      })}
      {graph.nodes.map((n) => {
        const p = pos.get(n.name);
        if (!p) return null;
        const h = nodeHealth(n);
        const inner = (
          <>
            <rect x={p.x - NODE_W / 2} y={p.y - NODE_H / 2} width={NODE_W} height={NODE_H} rx="10" />
            <text x={p.x - NODE_W / 2 + 12} y={p.y - NODE_H / 2 + 21} class="node-name">
              {label(n.name)}
            </text>
            <text x={p.x - NODE_W / 2 + 12} y={p.y - NODE_H / 2 + 40} class="node-sub">
              {n.kind === 'mesh' ? endpointSummary(n) : n.kind === 'gateway' ? `edge gateway · ${endpointSummary(n)}` : n.kind === 'outside-mesh' ? `outside the mesh · ${endpointSummary(n)}` : n.kind === 'clients' ? 'callers without a sidecar' : 'named by policies only'}
            </text>
            {(n.kind === 'mesh' || n.kind === 'gateway') && (
              <text x={p.x - NODE_W / 2 + 12} y={p.y - NODE_H / 2 + 58} class={`node-sub policy ${n.policy.current === n.policy.total ? 'current' : 'stale'}`}>
                {n.policy.total ? `policy ${n.policy.current}/${n.policy.total} current` : 'no sidecar connected'}
              </text>
            )}
            <g class="dots">
              {n.endpoints.slice(0, 8).map((e, i) => (
                <circle cx={p.x + NODE_W / 2 - 14 - i * 13} cy={p.y - NODE_H / 2 + 16} r="5" class={`dot ${e.state}`}>
                  <title>{`${e.id ?? e.address}: ${e.state}`}</title>
                </circle>
              ))}
            </g>
          </>
        );
        const cls = `node ${n.kind} ${h}`;
        const aria = `${label(n.name)}: ${endpointSummary(n)}${n.inbound ? `, ${fmtRps(n.inbound.rps)} requests a second, ${fmtPct(n.inbound.successRate)} success` : ''}`;
        return n.kind === 'clients' ? (
          <g class={cls} data-node={n.name} aria-label={aria}>
            {inner}
          </g>
        ) : (
          <a href={`#/service/${encodeURIComponent(n.name)}`} class={cls} data-node={n.name} aria-label={aria}>
            {inner}
          </a>
        );
      })}
    </svg>
  );
}
