// Each form and the events panel, mounted with a real Pinia store over a scripted fetch.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import PutForm from '../../src/components/PutForm.vue'
import GetForm from '../../src/components/GetForm.vue'
import DeleteForm from '../../src/components/DeleteForm.vue'
import EventsPanel from '../../src/components/EventsPanel.vue'
import HistoryPanel from '../../src/components/HistoryPanel.vue'
import KeyList from '../../src/components/KeyList.vue'
import TokenForm from '../../src/components/TokenForm.vue'
import { SHOWN_CHARS, useKvStore } from '../../src/store/kvStore'
import { NODE_HEADERS, fakeFetch } from './fake'

describe('forms', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('PutForm writes and reveals the node, revision and cache on "Show more"', async () => {
    const store = useKvStore()
    const { fetcher, calls } = fakeFetch([{ status: 200, body: { status: 'success' }, headers: NODE_HEADERS }])
    store.fetcher = fetcher
    const form = mount(PutForm)
    expect(form.find('button[type=submit]').attributes('disabled')).toBeDefined()
    await form.find('#put-key').setValue('greeting')
    await form.find('#put-value').setValue('hello')
    await form.find('form').trigger('submit')
    await flushPromises()
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({ data: { key: 'greeting', value: 'hello' } })
    expect(form.find('[role=status]').text()).toContain('200 success')
    expect(form.find('.result__meta').exists()).toBe(false)
    await form.find('button.link').trigger('click')
    const meta = form.find('.result__meta').text()
    expect(meta).toContain('n2')
    expect(meta).toContain('7')
    expect(meta).toContain('hit')
  })

  it('PutForm sends a TTL when one is given, and the seed body when not', async () => {
    const store = useKvStore()
    const ok = { status: 200, body: { status: 'success' } }
    const { fetcher, calls } = fakeFetch([ok, ok])
    store.fetcher = fetcher
    const form = mount(PutForm)
    await form.find('#put-key').setValue('session/ann')
    await form.find('#put-value').setValue('online')
    await form.find('#put-ttl').setValue('30')
    await form.find('form').trigger('submit')
    await flushPromises()
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({
      data: { key: 'session/ann', value: 'online' },
      ttl: 30,
    })
    await form.find('#put-ttl').setValue('')
    await form.find('form').trigger('submit')
    await flushPromises()
    expect(JSON.parse(String(calls[1].init?.body))).toEqual({ data: { key: 'session/ann', value: 'online' } })
  })

  it('GetForm shows the value, or the 404 detail', async () => {
    const store = useKvStore()
    const { fetcher } = fakeFetch([
      { status: 200, body: { data: { value: 'bar' } } },
      { status: 404, body: { detail: 'Key not found' } },
    ])
    store.fetcher = fetcher
    const form = mount(GetForm)
    await form.find('#get-key').setValue('foo')
    await form.find('form').trigger('submit')
    await flushPromises()
    expect(form.find('[role=status]').text()).toContain('bar')
    await form.find('form').trigger('submit')
    await flushPromises()
    const result = form.find('[role=status]')
    expect(result.text()).toContain('404 Key not found')
    expect(result.classes()).toContain('result--error')
  })

  it('GetForm loads a key picked in the list', async () => {
    const store = useKvStore()
    const { fetcher, calls } = fakeFetch([{ status: 200, body: { data: { value: 'v' } } }])
    store.fetcher = fetcher
    const form = mount(GetForm)
    store.picked = 'user/1'
    await flushPromises()
    expect(calls[0].url).toBe('/api/key?key=user%2F1')
    expect((form.find('#get-key').element as HTMLInputElement).value).toBe('user/1')
    expect(store.picked).toBeNull()
  })

  it('DeleteForm asks first, then deletes and shows the outcome', async () => {
    const store = useKvStore()
    const { fetcher, calls } = fakeFetch([{ status: 404, body: { detail: 'Key not found' } }])
    store.fetcher = fetcher
    const form = mount(DeleteForm)
    await form.find('#delete-key').setValue('gone')
    await form.find('form').trigger('submit')
    await flushPromises()
    expect(calls).toHaveLength(0)
    expect(form.find('[role=alertdialog]').text()).toContain('Delete gone? This cannot be undone.')
    // Cancel deletes nothing.
    await form.find('button.secondary').trigger('click')
    expect(form.find('[role=alertdialog]').exists()).toBe(false)
    await form.find('form').trigger('submit')
    await form.find('form').trigger('submit')
    await flushPromises()
    expect(calls).toHaveLength(1)
    expect(calls[0].init?.method).toBe('DELETE')
    expect(form.find('[role=status]').text()).toContain('404 Key not found')
  })

  it('a key opened from the list fills Put and Delete, ready to edit', async () => {
    const store = useKvStore()
    const { fetcher } = fakeFetch([{ status: 200, body: { data: { value: 'line 1\nline 2' } } }])
    store.fetcher = fetcher
    const get = mount(GetForm)
    const put = mount(PutForm)
    const remove = mount(DeleteForm)
    store.picked = 'user/1'
    await flushPromises()
    expect((put.find('#put-key').element as HTMLInputElement).value).toBe('user/1')
    expect((put.find('#put-value').element as HTMLTextAreaElement).value).toBe('line 1\nline 2')
    expect((remove.find('#delete-key').element as HTMLInputElement).value).toBe('user/1')
    // The value keeps its lines where it is shown.
    expect(get.find('.result__text').element.textContent).toBe('line 1\nline 2')
  })

  it('a large value is shown cut, with its size, until "Show all"', async () => {
    const store = useKvStore()
    const big = 'x'.repeat(SHOWN_CHARS + 500) + 'é'
    const { fetcher } = fakeFetch([{ status: 200, body: { data: { value: big } } }])
    store.fetcher = fetcher
    const form = mount(GetForm)
    await form.find('#get-key').setValue('big')
    await form.find('form').trigger('submit')
    await flushPromises()
    expect(form.find('.result__text').text()).toHaveLength(SHOWN_CHARS)
    const note = form.find('.result__cut').text()
    expect(note).toContain(`the first ${SHOWN_CHARS} characters of ${SHOWN_CHARS + 502} bytes`)
    await form.find('.result__cut button').trigger('click')
    expect(form.find('.result__text').text()).toBe(big)
    expect(form.find('.result__cut').exists()).toBe(false)
  })
})

describe('EventsPanel', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('lists events newest first and shows the connection state', async () => {
    const store = useKvStore()
    // The stream's request never answers here: the panel stays "connecting".
    store.fetcher = (() => new Promise(() => {})) as typeof fetch
    const panel = mount(EventsPanel)
    expect(panel.text()).toContain('connecting')
    expect(panel.text()).toContain('Waiting for changes')
    for (const revision of [1, 3, 2]) {
      store.addEvent({ type: revision === 2 ? 'delete' : 'put', key: `k${revision}`, revision, version: 1, node: 'n1', at: '2026-11-23T12:00:00Z' })
    }
    await flushPromises()
    const rows = panel.findAll('.event').map((row) => row.text())
    expect(rows).toHaveLength(3)
    expect(rows[0]).toContain('k3')
    expect(rows[1]).toContain('DELETE')
    expect(rows[2]).toContain('k1')
  })

  it('marks a delete made by a lease ending as EXPIRED or REVOKED', async () => {
    const store = useKvStore()
    store.fetcher = (() => new Promise(() => {})) as typeof fetch
    const panel = mount(EventsPanel)
    const at = '2026-11-23T12:00:00Z'
    store.addEvent({ type: 'delete', key: 'a', revision: 1, version: 0, node: 'n1', at, reason: 'expired' })
    store.addEvent({ type: 'delete', key: 'b', revision: 2, version: 0, node: 'n1', at, reason: 'revoked' })
    await flushPromises()
    const ops = panel.findAll('.op')
    expect(ops.map((op) => op.text())).toEqual(['REVOKED', 'EXPIRED'])
    expect(ops[1].classes()).toContain('op--expired')
  })
})

describe('HistoryPanel', () => {
  beforeEach(() => setActivePinia(createPinia()))

  const at = '2026-12-02T13:00:00Z'

  it('shows the versions of the key read, newest first, and pages back with "Older"', async () => {
    const store = useKvStore()
    const { fetcher, calls } = fakeFetch([
      {
        status: 200,
        body: {
          key: 'k',
          history: [
            { type: 'delete', revision: 9, create_revision: 0, version: 0, node: 'n2', at, reason: 'expired' },
            { type: 'put', revision: 7, create_revision: 5, version: 2, node: 'n1', at, value: 'two\nlines', lease: 3 },
          ],
          next: 7,
          compact_revision: 0,
        },
      },
      {
        status: 200,
        body: {
          key: 'k',
          history: [{ type: 'put', revision: 5, create_revision: 5, version: 1, node: 'n1', at, value: 'one' }],
          next: null,
          compact_revision: 0,
        },
      },
    ])
    store.fetcher = fetcher
    const panel = mount(HistoryPanel)
    expect(panel.find('section').exists()).toBe(false)
    store.historyFor = { key: 'k' }
    await flushPromises()
    expect(calls[0].url).toBe('/api/key/history?key=k&limit=20')
    const rows = panel.findAll('.version').map((row) => row.text())
    expect(rows).toHaveLength(2)
    expect(rows[0]).toContain('rev 9')
    expect(rows[0]).toContain('EXPIRED')
    expect(rows[1]).toContain('two')
    expect(rows[1]).toContain('v2')
    await panel.find('button').trigger('click')
    await flushPromises()
    expect(calls[1].url).toBe('/api/key/history?key=k&limit=20&before=7')
    expect(panel.findAll('.version')).toHaveLength(3)
    expect(panel.find('button').exists()).toBe(false)
  })

  it('reloads when the key is read again or written, and shows a refusal', async () => {
    const store = useKvStore()
    const empty = { key: 'k', history: [], next: null, compact_revision: 4 }
    const one = {
      key: 'k',
      history: [{ type: 'put', revision: 6, create_revision: 6, version: 1, node: 'n1', at, value: 'v' }],
      next: null,
      compact_revision: 4,
    }
    const { fetcher, calls } = fakeFetch([
      { status: 200, body: empty },
      { status: 200, body: one },
      { status: 503, body: { detail: 'database unavailable' } },
    ])
    store.fetcher = fetcher
    const panel = mount(HistoryPanel)
    store.historyFor = { key: 'k' }
    await flushPromises()
    expect(panel.text()).toContain('No versions since revision 4')
    // A transaction that wrote another key first and then this one: its event for this key
    // comes second, behind one that names another key.
    store.addEvent({ type: 'put', key: 'a', revision: 6, version: 1, node: 'n1', at })
    store.addEvent({ type: 'put', key: 'k', revision: 6, version: 1, node: 'n1', at })
    await flushPromises()
    expect(panel.findAll('.version')).toHaveLength(1)
    store.addEvent({ type: 'put', key: 'other', revision: 7, version: 1, node: 'n1', at })
    await flushPromises()
    expect(calls).toHaveLength(2)
    store.historyFor = { key: 'k' }
    await flushPromises()
    expect(panel.find('.error').text()).toBe('database unavailable')
  })
})

describe('KeyList', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'] })
  })
  afterEach(() => vi.useRealTimers())

  it('shows the time left on a leased key, counting down, then expired', async () => {
    const store = useKvStore()
    const page = {
      keys: [
        { key: 'plain', create_revision: 1, mod_revision: 1, version: 1 },
        { key: 'session/ann', create_revision: 2, mod_revision: 2, version: 1, lease: 3, ttl_remaining_ms: 5000 },
      ],
      next: null,
    }
    const { fetcher } = fakeFetch([{ status: 200, body: page }])
    store.fetcher = fetcher
    const list = mount(KeyList)
    await flushPromises()
    const meta = () => list.findAll('.key__meta').map((row) => row.text())
    expect(meta()).toEqual(['rev 1 · v1', 'rev 2 · v1 · 5s left'])
    await vi.advanceTimersByTimeAsync(2000)
    expect(meta()[1]).toBe('rev 2 · v1 · 3s left')
    await vi.advanceTimersByTimeAsync(4000)
    expect(meta()[1]).toBe('rev 2 · v1 · expired')
    list.unmount()
  })
})

describe('TokenForm', () => {
  beforeEach(() => {
    sessionStorage.clear()
    setActivePinia(createPinia())
  })

  it('keeps the token, and says when the cluster wants one or refused it', async () => {
    const store = useKvStore()
    const form = mount(TokenForm)
    expect(form.find('input').attributes('type')).toBe('password')
    store.connection = 'unauthorized'
    await flushPromises()
    expect(form.text()).toContain('this cluster needs a token')
    await form.find('input').setValue('tok-1')
    await form.find('form').trigger('submit')
    expect(store.token).toBe('tok-1')
    expect(sessionStorage.getItem('keygrid.token')).toBe('tok-1')
    await flushPromises()
    expect(form.text()).toContain('token refused')
  })
})
