import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { getToken, setToken } from './api.ts';
import { ChatView } from './chat.tsx';
import { OpsView } from './ops.tsx';

type Route = { view: 'chat'; sessionId: string | undefined } | { view: 'ops' };

function parseHash(hash: string): Route {
  if (hash.startsWith('#/ops')) return { view: 'ops' };
  const m = /^#\/chat\/(.+)$/.exec(hash);
  return { view: 'chat', sessionId: m === null ? undefined : decodeURIComponent(m[1]!) };
}

function TokenForm(props: { onChange: () => void }) {
  const [value, setValue] = useState('');
  const [saved, setSaved] = useState(getToken() !== '');
  return (
    <form
      class="token"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(value.trim());
        setSaved(value.trim() !== '');
        setValue('');
        props.onChange();
      }}
    >
      <label for="token">Token</label>
      <input id="token" type="password" autocomplete="off" value={value} placeholder={saved ? 'saved for this tab' : 'none (open server)'} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
      <button type="submit">Use token</button>
      {saved && (
        <button
          type="button"
          onClick={() => {
            setToken('');
            setSaved(false);
            props.onChange();
          }}
        >
          Forget token
        </button>
      )}
    </form>
  );
}

function App() {
  const [route, setRoute] = useState<Route>(() => parseHash(location.hash));
  const [epoch, setEpoch] = useState(0);
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const open = (id: string) => {
    location.hash = id === '' ? '#/chat' : `#/chat/${encodeURIComponent(id)}`;
  };
  return (
    <>
      <a
        class="skip"
        href="#content"
        onClick={(e) => {
          // The hash is the page's route: move the focus, not the location.
          e.preventDefault();
          document.getElementById('content')?.focus();
        }}
      >
        Skip to content
      </a>
      <header>
        <h1>Arbor</h1>
        <nav aria-label="Views">
          <a href="#/chat" aria-current={route.view === 'chat' ? 'page' : undefined}>
            Chat
          </a>
          <a href="#/ops" aria-current={route.view === 'ops' ? 'page' : undefined}>
            Operations
          </a>
        </nav>
        <TokenForm onChange={() => setEpoch((n) => n + 1)} />
      </header>
      <div id="content" key={epoch} tabIndex={-1}>
        {route.view === 'ops' ? <OpsView /> : <ChatView sessionId={route.sessionId} onOpen={open} />}
      </div>
    </>
  );
}

const root = document.getElementById('app')!;
// Preact appends to the container: the static "Loading" line goes first.
root.textContent = '';
render(<App />, root);
