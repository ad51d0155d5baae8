-- wrk script: PUT /api/key with a random key out of KG_KEYS (bench/00000000 ...) and a
-- 128-byte value.
local keys = tonumber(os.getenv("KG_KEYS") or "100000")
local value = string.rep("v", 128)
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"

request = function()
    local body = string.format('{"data":{"key":"bench/%08d","value":"%s"}}', math.random(0, keys - 1), value)
    return wrk.format(nil, "/api/key", nil, body)
end

-- Non-2xx answers are counted by wrk itself; print them so a broken run is visible.
done = function(summary, latency, requests)
    io.stderr:write(string.format("non-2xx: %d, socket errors: %d\n",
        summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
