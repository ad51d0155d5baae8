// The store's API calls and error handling, against a scripted fetch.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import {
  MAX_EVENTS,
  REOPEN_DELAY_MS,
  TOKEN_STORAGE_KEY,
  useKvStore,
  type ChangeEvent,
} from '../../src/store/kvStore'
import { NODE_HEADERS, fakeFetch } from './fake'

function event(revision: number, key = 'k'): ChangeEvent {
  return { type: 'put', key, revision, version: 1, node: 'n1', at: '2026-11-23T12:00:00Z' }
}

describe('kvStore', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('puts with the seed body and reads the headers', async () => {
    const store = useKvStore()
    const { fetcher, calls } = fakeFetch([{ status: 200, body: { status: 'success' }, headers: NODE_HEADERS }])
    store.fetcher = fetcher
    const result = await store.put('a b', 'v')
    expect(calls[0].url).toBe('/api/key')
    expect(calls[0].init?.method).toBe('PUT')
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({ data: { key: 'a b', value: 'v' } })
    expect(result).toMatchObject({ ok: true, status: 200, message: 'success' })
    expect(result.meta).toEqual({
      node: 'n2', revision: 7, createRevision: 3, version: 2, cache: 'hit', requestId: 'req-1',
    })
  })

  it('gets a value, and shows the 404 detail for a missing key', async () => {
    const store = useKvStore()
    const { fetcher, calls } = fakeFetch([
      { status: 200, body: { data: { value: 'bar' } } },
      { status: 404, body: { detail: 'Key not found' } },
    ])
    store.fetcher = fetcher
    expect(await store.get('a/b?c')).toMatchObject({ ok: true, value: 'bar', message: 'bar' })
    expect(calls[0].url).toBe('/api/key?key=a%2Fb%3Fc')
    expect(await store.get('nope')).toMatchObject({ ok: false, status: 404, message: 'Key not found' })
  })

  it('deletes, and turns a network failure into a message', async () => {
    const store = useKvStore()
    const { fetcher, calls } = fakeFetch([{ status: 200, body: { status: 'success' } }])
    store.fetcher = fetcher
    expect(await store.remove('k')).toMatchObject({ ok: true, message: 'success' })
    expect(calls[0].init?.method).toBe('DELETE')
    const failed = await store.remove('k')
    expect(failed.ok).toBe(false)
    expect(failed.message).toMatch(/^network error/)
  })

  it('pages through keys with after', async () => {
    const store = useKvStore()
    const record = (key: string) => ({ key, value: 'v', create_revision: 1, mod_revision: 1, version: 1 })
    const { fetcher, calls } = fakeFetch([
      { status: 200, body: { keys: [record('a'), record('b')], next: 'b' } },
      { status: 200, body: { keys: [record('c')], next: null } },
      { status: 400, body: { detail: 'limit must be 1 to 1000' } },
    ])
    store.fetcher = fetcher
    await store.loadKeys('x/')
    expect(calls[0].url).toBe('/api/keys?prefix=x%2F&limit=20')
    expect(store.nextAfter).toBe('b')
    await store.loadKeys('x/', true)
    expect(calls[1].url).toBe('/api/keys?prefix=x%2F&limit=20&after=b')
    expect(store.keys.map((k) => k.key)).toEqual(['a', 'b', 'c'])
    expect(store.nextAfter).toBeNull()
    await store.loadKeys('x/')
    expect(store.keysError).toBe('limit must be 1 to 1000')
  })

  it('keeps events newest first, without duplicates, at most MAX_EVENTS', () => {
    const store = useKvStore()
    for (const revision of [3, 1, 2, 3, 5, 4]) store.addEvent(event(revision))
    expect(store.events.map((e) => e.revision)).toEqual([5, 4, 3, 2, 1])
    for (let revision = 6; revision < 6 + MAX_EVENTS; revision++) store.addEvent(event(revision))
    expect(store.events).toHaveLength(MAX_EVENTS)
    expect(store.events[0].revision).toBe(5 + MAX_EVENTS)
  })

  it('keeps every key of a revision that changed several, in key order, once each', () => {
    const store = useKvStore()
    const at = '2026-12-02T12:00:00Z'
    for (const [key, revision] of [['z', 6], ['b', 7], ['c', 7], ['a', 7], ['b', 7], ['y', 8]] as const) {
      store.addEvent({ type: 'put', key, revision, version: 1, node: 'n1', at })
    }
    expect(store.events.map((e) => `${e.revision}${e.key}`)).toEqual(['8y', '7a', '7b', '7c', '6z'])
  })

  /** A stand-in stream: the handlers the store sets, its state, and whether it was closed. */
  function fakeStream() {
    const opened: Array<{ url: string; fetch: typeof globalThis.fetch; source: any }> = []
    const open = (url: string, streamFetch: typeof globalThis.fetch) => {
      const source: any = { readyState: 0, closed: false, close() { this.closed = true; this.readyState = 2 } }
      opened.push({ url, fetch: streamFetch, source })
      return source as EventSource
    }
    return { opened, open }
  }
  const failure = (code?: number) => Object.assign(new Event('error'), { code })

  it('follows the watch stream and shows its connection state', () => {
    const store = useKvStore()
    const { opened, open } = fakeStream()
    const stop = store.watch(open)
    expect(opened.map((o) => o.url)).toEqual(['/api/watch'])
    const { source } = opened[0]
    expect(store.connection).toBe('connecting')
    source.onopen?.(new Event('open'))
    expect(store.connection).toBe('live')
    source.onmessage?.(new MessageEvent('message', { data: JSON.stringify(event(9, 'x')) }))
    source.onmessage?.(new MessageEvent('message', { data: 'not json' }))
    expect(store.events.map((e) => e.key)).toEqual(['x'])
    // A network error: the stream retries by itself (still CONNECTING), nothing reopens.
    source.onerror?.(failure())
    expect(store.connection).toBe('reconnecting')
    expect(opened).toHaveLength(1)
    stop()
    expect(source.closed).toBe(true)
  })

  describe('when the node ends the stream', () => {
    beforeEach(() => vi.useFakeTimers())
    afterEach(() => vi.useRealTimers())

    it('opens a new one after a while, unless it was a 401 or 403', () => {
      const store = useKvStore()
      const { opened, open } = fakeStream()
      const stop = store.watch(open)
      // A 502 from nginx while the node restarts: the stream is CLOSED and will not retry.
      opened[0].source.readyState = 2
      opened[0].source.onerror?.(failure(502))
      expect(store.connection).toBe('reconnecting')
      vi.advanceTimersByTime(REOPEN_DELAY_MS)
      expect(opened).toHaveLength(2)
      expect(store.connection).toBe('connecting')
      // A refused token: wait for another instead of retrying.
      opened[1].source.onerror?.(failure(401))
      expect(store.connection).toBe('unauthorized')
      expect(opened[1].source.closed).toBe(true)
      vi.advanceTimersByTime(10 * REOPEN_DELAY_MS)
      expect(opened).toHaveLength(2)
      stop()
    })

    it('stops reopening once stopped', () => {
      const store = useKvStore()
      const { opened, open } = fakeStream()
      const stop = store.watch(open)
      opened[0].source.readyState = 2
      opened[0].source.onerror?.(failure(503))
      stop()
      vi.advanceTimersByTime(10 * REOPEN_DELAY_MS)
      expect(opened).toHaveLength(1)
    })
  })

  it('sends the token with every call and on the stream, and keeps it for the tab', async () => {
    sessionStorage.clear()
    const store = useKvStore()
    expect(store.token).toBe('')
    const { fetcher, calls } = fakeFetch([
      { status: 200, body: { data: { value: 'v' } } },
      { status: 200, body: { data: { value: 'v' } } },
      { status: 200, body: {} },
    ])
    store.fetcher = fetcher
    await store.get('k')
    expect(new Headers(calls[0].init?.headers).has('authorization')).toBe(false)

    store.setToken('  s3cret ')
    expect(store.token).toBe('s3cret')
    expect(sessionStorage.getItem(TOKEN_STORAGE_KEY)).toBe('s3cret')
    await store.get('k')
    expect(new Headers(calls[1].init?.headers).get('authorization')).toBe('Bearer s3cret')

    // The stream's fetch carries it too, next to the headers the stream sets itself.
    const { opened, open } = fakeStream()
    const stop = store.watch(open)
    await opened[0].fetch('/api/watch', { headers: { Accept: 'text/event-stream', 'Last-Event-ID': '7' } })
    const sent = new Headers(calls[2].init?.headers)
    expect([sent.get('authorization'), sent.get('accept'), sent.get('last-event-id')]).toEqual([
      'Bearer s3cret', 'text/event-stream', '7',
    ])
    stop()

    // A new store in the same tab starts with it; an empty token forgets it.
    setActivePinia(createPinia())
    expect(useKvStore().token).toBe('s3cret')
    useKvStore().setToken('')
    expect(sessionStorage.getItem(TOKEN_STORAGE_KEY)).toBeNull()
  })

  it('shows the peers a node reports, or the node itself', async () => {
    const store = useKvStore()
    const status = (peers: unknown[]) => ({
      node: 'n1', listen: '127.0.0.1:8001', database: { kind: 'postgres', state: 'ok' },
      cache: 'disabled', revision: 4, peers,
    })
    const { fetcher } = fakeFetch([
      { status: 200, body: status([]) },
      { status: 200, body: status([
        { node: 'n1', listen: 'a', status: 'ok', revision: 4, heartbeat_age_ms: 300 },
        { node: 'n2', listen: 'b', status: 'degraded', revision: 4, heartbeat_age_ms: 200 },
        { node: 'n3', listen: 'c', status: 'ok', revision: 2, heartbeat_age_ms: 15000 },
        // Three missed heartbeats are enough: not the ten seconds the chip used to wait.
        { node: 'n4', listen: 'd', status: 'ok', revision: 4, heartbeat_age_ms: 3200 },
      ]) },
    ])
    store.fetcher = fetcher
    await store.loadStatus()
    expect(store.nodes).toEqual([{ node: 'n1', listen: '127.0.0.1:8001', status: 'ok', revision: 4 }])
    await store.loadStatus()
    expect(store.nodes.map((n) => `${n.node}:${n.status}`)).toEqual(['n1:ok', 'n2:degraded', 'n3:stale', 'n4:stale'])
  })
})
