// The one place that talks to the KeyGrid API: forms, key list, live events and node health
// all go through this Pinia store, so a URL or a JSON shape is written once.
import { EventSource as FetchEventSource } from 'eventsource'
import { defineStore } from 'pinia'

/** What the response headers said about a request (the forms' "Show more"). */
export interface Meta {
  node: string | null
  revision: number | null
  createRevision: number | null
  version: number | null
  cache: 'hit' | 'miss' | null
  requestId: string | null
}

/** The outcome of a put, get or delete, ready to show. */
export interface Result {
  ok: boolean
  status: number
  /** The seed's status, the value read, or the server's detail. */
  message: string
  value?: string
  meta: Meta
}

export interface KeyRecord {
  key: string
  /** Absent when the listing asked for keys only. */
  value?: string
  create_revision: number
  mod_revision: number
  version: number
  /** The key's lease, when it has one, and the milliseconds left on it when listed. */
  lease?: number
  ttl_remaining_ms?: number
}

export interface ChangeEvent {
  type: 'put' | 'delete'
  key: string
  revision: number
  version: number
  node: string
  at: string
  value?: string
  /** On a delete made by a lease's end. */
  reason?: 'expired' | 'revoked'
}

/** One version of a key, as /api/key/history lists it. */
export interface KeyVersion {
  type: 'put' | 'delete'
  revision: number
  create_revision: number
  version: number
  node: string
  at: string
  value?: string
  lease?: number
  reason?: 'expired' | 'revoked'
}

/** The history shown for the key last read with Get. */
export interface History {
  key: string
  /** Newest first. */
  versions: KeyVersion[]
  /** The `before` of the next (older) page, or null on the last page. */
  next: number | null
  /** Versions replaced at or below this have been compacted away. */
  compactRevision: number
  error: string | null
}

export interface NodeInfo {
  node: string
  listen: string
  status: 'ok' | 'degraded' | 'stale' | 'down'
  revision: number | null
}

/** A node whose heartbeat is older than this is shown `stale`, as the dashboard shows it:
 *  heartbeats come every second, so three missed ones mean something is wrong. */
export const STALE_AFTER_MS = 3000

/** A key opened for editing: the Put form takes its key and value, the Delete form its key. */
export interface Editing {
  key: string
  value: string
}

/** Characters of a value shown before it is cut: a 1 MiB value would bury the page. */
export const SHOWN_CHARS = 2000

/** Events kept in the live panel. */
export const MAX_EVENTS = 50
/** Keys per page of the key list. */
export const PAGE_SIZE = 20

type Fetch = typeof fetch

/** Where the API token is kept: for this tab, until it closes. */
export const TOKEN_STORAGE_KEY = 'keygrid.token'

/** How long the event stream waits before opening again after the node ended it. */
export const REOPEN_DELAY_MS = 2000

export type Connection = 'connecting' | 'live' | 'reconnecting' | 'unauthorized'

/** Opens the event stream; `fetch` adds the token. A stand-in in unit tests. */
export type OpenStream = (url: string, fetch: Fetch) => EventSource

// The browser's EventSource cannot send headers; this one is the WhatWG EventSource over a
// fetch we supply (Last-Event-ID and reconnection included), so the token can go along.
const openStream: OpenStream = (url, fetch) =>
  new FetchEventSource(url, { fetch }) as unknown as EventSource

function storedToken(): string {
  try {
    return sessionStorage.getItem(TOKEN_STORAGE_KEY) ?? ''
  } catch {
    return '' // storage unavailable (privacy mode): the token lives in memory only
  }
}

function numberHeader(headers: Headers, name: string): number | null {
  const value = headers.get(name)
  return value === null || value === '' ? null : Number(value)
}

function readMeta(headers: Headers): Meta {
  const cache = headers.get('x-cache')
  return {
    node: headers.get('x-keygrid-node'),
    revision: numberHeader(headers, 'x-keygrid-revision'),
    createRevision: numberHeader(headers, 'x-keygrid-create-revision'),
    version: numberHeader(headers, 'x-keygrid-version'),
    cache: cache === 'hit' || cache === 'miss' ? cache : null,
    requestId: headers.get('x-request-id'),
  }
}

const NO_META: Meta = {
  node: null,
  revision: null,
  createRevision: null,
  version: null,
  cache: null,
  requestId: null,
}

async function detail(response: Response): Promise<string> {
  try {
    const body = await response.json()
    if (body && typeof body.detail === 'string') return body.detail
  } catch {
    // not JSON: fall through to the status text
  }
  return `${response.status} ${response.statusText}`.trim()
}

export const useKvStore = defineStore('kv', {
  state: () => ({
    /** Swappable for tests; the browser's fetch otherwise. */
    fetcher: null as Fetch | null,
    keys: [] as KeyRecord[],
    prefix: '',
    /** The `after` of the next page, or null on the last page. */
    nextAfter: null as string | null,
    /** When each leased key of the list expires, by this page's clock (Date.now()): the time
     *  left the listing said, counted from when the page arrived. */
    deadlines: {} as Record<string, number>,
    keysError: null as string | null,
    events: [] as ChangeEvent[],
    connection: 'connecting' as Connection,
    /** The bearer token sent with every request, when the nodes require one. */
    token: storedToken(),
    nodes: [] as NodeInfo[],
    nodesError: null as string | null,
    /** A key picked in the list, for the Get form to load. */
    picked: null as string | null,
    /** The key last opened from the list, for the Put and Delete forms. */
    editing: null as Editing | null,
    /** The key last read with Get, whose history the history panel shows: a new object for
     *  every read, so that reading the same key again reloads it. */
    historyFor: null as { key: string } | null,
    history: null as History | null,
  }),
  actions: {
    /** Keeps `token` for this tab (sessionStorage); an empty one is forgotten. */
    setToken(token: string) {
      this.token = token.trim()
      try {
        if (this.token) sessionStorage.setItem(TOKEN_STORAGE_KEY, this.token)
        else sessionStorage.removeItem(TOKEN_STORAGE_KEY)
      } catch {
        // storage unavailable: kept in memory for this page only
      }
    },

    /** fetch, with the token when there is one. */
    async call(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
      const run = this.fetcher ?? fetch
      if (!this.token) return run(input, init)
      const headers = new Headers(init?.headers)
      headers.set('Authorization', `Bearer ${this.token}`)
      return run(input, { ...init, headers })
    },

    async request(path: string, init: RequestInit, ok: (body: any) => Partial<Result>): Promise<Result> {
      let response: Response
      try {
        response = await this.call(path, init)
      } catch (error) {
        return { ok: false, status: 0, message: `network error: ${String(error)}`, meta: NO_META }
      }
      const meta = readMeta(response.headers)
      if (!response.ok) {
        return { ok: false, status: response.status, message: await detail(response), meta }
      }
      const body = await response.json()
      return { ok: true, status: response.status, message: '', meta, ...ok(body) }
    },

    /** With `ttl` (seconds), the key gets a lease of its own and is deleted when it runs out. */
    put(key: string, value: string, ttl?: number): Promise<Result> {
      const body = ttl === undefined ? { data: { key, value } } : { data: { key, value }, ttl }
      return this.request(
        '/api/key',
        {
          method: 'PUT',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
        },
        (body) => ({ message: body.status }),
      )
    },

    get(key: string): Promise<Result> {
      return this.request(`/api/key?key=${encodeURIComponent(key)}`, { method: 'GET' }, (body) => ({
        message: body.data.value,
        value: body.data.value,
      }))
    },

    remove(key: string): Promise<Result> {
      return this.request(`/api/key?key=${encodeURIComponent(key)}`, { method: 'DELETE' }, (body) => ({
        message: body.status,
      }))
    },

    /** Loads the first page for `prefix`, or with `more` the next page after the current. */
    async loadKeys(prefix: string, more = false) {
      const params = new URLSearchParams({ prefix, limit: String(PAGE_SIZE) })
      if (more && this.nextAfter !== null) params.set('after', this.nextAfter)
      try {
        const response = await this.call(`/api/keys?${params}`)
        if (!response.ok) {
          this.keysError = await detail(response)
          return
        }
        const page = await response.json()
        const arrived = Date.now()
        if (!more) this.deadlines = {}
        for (const record of page.keys as KeyRecord[]) {
          if (record.ttl_remaining_ms !== undefined) {
            this.deadlines[record.key] = arrived + record.ttl_remaining_ms
          }
        }
        this.keys = more ? [...this.keys, ...page.keys] : page.keys
        this.nextAfter = page.next ?? null
        this.prefix = prefix
        this.keysError = null
      } catch (error) {
        this.keysError = `network error: ${String(error)}`
      }
    },

    /** Loads the newest page of `key`'s versions, or with `more` the next older page. */
    async loadHistory(key: string, more = false) {
      const params = new URLSearchParams({ key, limit: String(PAGE_SIZE) })
      const older = more && this.history?.key === key ? this.history.next : null
      if (older !== null) params.set('before', String(older))
      const kept = older !== null && this.history ? this.history.versions : []
      try {
        const response = await this.call(`/api/key/history?${params}`)
        if (!response.ok) {
          this.history = { key, versions: kept, next: null, compactRevision: 0, error: await detail(response) }
          return
        }
        const page = await response.json()
        this.history = {
          key,
          versions: [...kept, ...(page.history as KeyVersion[])],
          next: page.next ?? null,
          compactRevision: page.compact_revision,
          error: null,
        }
      } catch (error) {
        this.history = { key, versions: kept, next: null, compactRevision: 0, error: `network error: ${String(error)}` }
      }
    },

    /** Newest first by revision, no duplicates, at most MAX_EVENTS. */
    addEvent(event: ChangeEvent) {
      // A revision that changed several keys (a transaction, a prefix delete) has an event per
      // key: one is a duplicate only if both match. Within a revision, keys keep their order.
      if (this.events.some((e) => e.revision === event.revision && e.key === event.key)) return
      const at = this.events.findIndex(
        (e) => e.revision < event.revision || (e.revision === event.revision && e.key > event.key),
      )
      if (at === -1) this.events.push(event)
      else this.events.splice(at, 0, event)
      if (this.events.length > MAX_EVENTS) this.events.length = MAX_EVENTS
    },

    /**
     * Follows /api/watch, with the token. The stream reconnects by itself after a network
     * error and sends Last-Event-ID, so the node replays what was missed. An answer other than
     * 200 ends it: a 401 or 403 waits for another token (`unauthorized`); anything else (a
     * node restarting behind nginx) opens a new stream after REOPEN_DELAY_MS. Returns a
     * function that stops following.
     */
    watch(open: OpenStream = openStream): () => void {
      let source: EventSource | null = null
      let timer: ReturnType<typeof setTimeout> | undefined
      let stopped = false
      const start = () => {
        this.connection = 'connecting'
        const current = open('/api/watch', (input, init) => this.call(input, init))
        source = current
        current.onopen = () => {
          this.connection = 'live'
        }
        current.onerror = (event: Event) => {
          const code = (event as Event & { code?: number }).code
          if (code === 401 || code === 403) {
            this.connection = 'unauthorized'
            current.close()
            return
          }
          this.connection = 'reconnecting'
          if (current.readyState === 2 && !stopped) {
            // CLOSED: the stream will not retry on its own.
            timer = setTimeout(start, REOPEN_DELAY_MS)
          }
        }
        current.onmessage = (message: MessageEvent) => {
          try {
            this.addEvent(JSON.parse(message.data))
          } catch {
            // a malformed event is skipped; the stream goes on
          }
        }
      }
      start()
      return () => {
        stopped = true
        clearTimeout(timer)
        source?.close()
      }
    },

    /** The answering node's /api/status: its peers if it has heard any, else itself. */
    async loadStatus() {
      try {
        const response = await this.call('/api/status')
        if (!response.ok) {
          this.nodesError = await detail(response)
          return
        }
        const status = await response.json()
        const peers: NodeInfo[] = (status.peers ?? []).map((peer: any) => ({
          node: peer.node,
          listen: peer.listen,
          status: peer.heartbeat_age_ms > STALE_AFTER_MS ? 'stale' : peer.status,
          revision: peer.revision,
        }))
        const self: NodeInfo = {
          node: status.node,
          listen: status.listen,
          status: status.database.state === 'ok' && status.cache !== 'degraded' ? 'ok' : 'degraded',
          revision: status.revision,
        }
        this.nodes = peers.length > 0 ? peers : [self]
        this.nodesError = null
      } catch (error) {
        this.nodesError = `network error: ${String(error)}`
      }
    },
  },
})
