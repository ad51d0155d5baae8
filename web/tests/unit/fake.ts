// A scripted stand-in for fetch in unit tests (the browser's fetch is a boundary the app does
// not own; the end-to-end tests use the real API). Records every call.
export interface Call {
  url: string
  init?: RequestInit
}

export function fakeFetch(answers: Array<{ status: number; body: unknown; headers?: Record<string, string> }>) {
  const calls: Call[] = []
  const fetcher = async (url: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    calls.push({ url: String(url), init })
    const answer = answers.shift()
    if (!answer) throw new TypeError('Failed to fetch')
    return new Response(JSON.stringify(answer.body), {
      status: answer.status,
      headers: { 'Content-Type': 'application/json', ...(answer.headers ?? {}) },
    })
  }
  return { fetcher: fetcher as typeof fetch, calls }
}

export const NODE_HEADERS = {
  'x-keygrid-node': 'n2',
  'x-keygrid-revision': '7',
  'x-keygrid-create-revision': '3',
  'x-keygrid-version': '2',
  'x-cache': 'hit',
  'x-request-id': 'req-1',
}
