// The seed's k6 load test, for KeyGrid's REST API: PUT, GET and DELETE scenarios with checks
// on the seed's exact bodies, and thresholds. Run it with scripts/load-k6.sh.
//
//   BASE_URL  the API (default http://127.0.0.1:8000)
//   DURATION  each scenario's length (default 30s)
//   VUS       virtual users per scenario (default 10)
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const DURATION = __ENV.DURATION || '30s';
const VUS = parseInt(__ENV.VUS || '10', 10);
const KEYS = 1000;
const JSON_HEADERS = { headers: { 'Content-Type': 'application/json' } };

export const options = {
  scenarios: {
    put: { executor: 'constant-vus', exec: 'put', vus: VUS, duration: DURATION },
    get: { executor: 'constant-vus', exec: 'get', vus: VUS, duration: DURATION },
    delete: { executor: 'constant-vus', exec: 'del', vus: Math.max(1, Math.floor(VUS / 5)), duration: DURATION },
  },
  thresholds: {
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
    'http_req_duration{scenario:get}': ['p(95)<200'],
    'http_req_duration{scenario:put}': ['p(95)<500'],
  },
};

// Every key exists before the scenarios start, so GETs can expect 200.
export function setup() {
  for (let i = 0; i < KEYS; i++) {
    const res = http.put(`${BASE_URL}/api/key`, JSON.stringify({ data: { key: `k6/${i}`, value: 'seed' } }), JSON_HEADERS);
    if (res.status !== 200) {
      throw new Error(`setup: PUT k6/${i} returned ${res.status}: ${res.body}`);
    }
  }
}

function key() {
  return `k6/${Math.floor(Math.random() * KEYS)}`;
}

export function put() {
  const value = `v-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  const res = http.put(`${BASE_URL}/api/key`, JSON.stringify({ data: { key: key(), value } }), JSON_HEADERS);
  check(res, {
    'put: 200': (r) => r.status === 200,
    'put: seed body': (r) => r.body === '{"status":"success"}',
  });
}

export function get() {
  const res = http.get(`${BASE_URL}/api/key?key=${key()}`);
  check(res, {
    'get: 200': (r) => r.status === 200,
    'get: seed shape': (r) => r.json('data.value') !== undefined,
  });
}

// Deletes a key of its own, then checks the seed's 404 for it.
export function del() {
  const own = `k6-del/${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  http.put(`${BASE_URL}/api/key`, JSON.stringify({ data: { key: own, value: 'x' } }), JSON_HEADERS);
  const res = http.del(`${BASE_URL}/api/key?key=${own}`);
  check(res, {
    'delete: 200': (r) => r.status === 200,
    'delete: seed body': (r) => r.body === '{"status":"success"}',
  });
  const gone = http.get(`${BASE_URL}/api/key?key=${own}`, { responseCallback: http.expectedStatuses(404) });
  check(gone, {
    'deleted: 404': (r) => r.status === 404,
    'deleted: seed detail': (r) => r.body === '{"detail":"Key not found"}',
  });
}
