/**
 * The meshlet dashboard: a small read-only single-page app over the control plane's API,
 * bundled at build time (scripts/build-ui.js). Routes live in the URL's hash:
 *   #/                         service graph
 *   #/service/NAME[/route/R]   service (or route) page
 *   #/rollout                  policy rollout
 *   #/tap[/SERVICE]            live requests
 */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { GraphPage, RolloutPage, ServicePage, TapPage } from './pages';

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const f = (): void => setHash(location.hash);
    window.addEventListener('hashchange', f);
    return () => window.removeEventListener('hashchange', f);
  }, []);
  return hash;
}

function App() {
  const hash = useHash();
  const parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  let page;
  let current = 'graph';
  if (parts[0] === 'service' && parts[1]) {
    page = <ServicePage service={parts[1]} route={parts[2] === 'route' ? parts.slice(3).join('/') : undefined} />;
    current = '';
  } else if (parts[0] === 'rollout') {
    page = <RolloutPage />;
    current = 'rollout';
  } else if (parts[0] === 'tap') {
    page = <TapPage service={parts[1] || undefined} />;
    current = 'tap';
  } else page = <GraphPage />;
  // Move focus to the new page's heading, so keyboard and screen-reader users land on it.
  useEffect(() => {
    const h = document.querySelector<HTMLElement>('main h1');
    if (h) {
      h.tabIndex = -1;
      h.focus({ preventScroll: true });
    }
  }, [hash]);
  const link = (href: string, name: string, text: string) => (
    <a href={href} aria-current={current === name ? 'page' : undefined}>
      {text}
    </a>
  );
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById('main')?.focus())}>
        Skip to content
      </a>
      <header>
        <span class="brand">meshlet</span>
        <nav aria-label="Dashboard">
          {link('#/', 'graph', 'Graph')}
          {link('#/rollout', 'rollout', 'Policy rollout')}
          {link('#/tap', 'tap', 'Live requests')}
        </nav>
        <span class="readonly" title="This page never changes policies">read-only</span>
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app') as HTMLElement);
