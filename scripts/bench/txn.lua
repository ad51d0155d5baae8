-- wrk script: POST /api/txn with KG_TXN_PUTS puts (1 by default) of random keys out of
-- KG_KEYS (bench/00000000 ...), distinct within the transaction, and 128-byte values: the
-- same writes as put.lua, as transactions.
local keys = tonumber(os.getenv("KG_KEYS") or "100000")
local puts = tonumber(os.getenv("KG_TXN_PUTS") or "1")
local value = string.rep("v", 128)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
    local first = math.random(0, keys - 1)
    local ops = {}
    for i = 0, puts - 1 do
        ops[#ops + 1] = string.format('{"op":"put","key":"bench/%08d","value":"%s"}', (first + i) % keys, value)
    end
    local body = '{"success":[' .. table.concat(ops, ",") .. ']}'
    return wrk.format(nil, "/api/txn", nil, body)
end

done = function(summary, latency, requests)
    io.stderr:write(string.format("non-2xx: %d, socket errors: %d\n",
        summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
