-- wrk script: GET /api/key for a random preloaded key out of KG_KEYS.
local keys = tonumber(os.getenv("KG_KEYS") or "100000")

request = function()
    return wrk.format("GET", "/api/key?key=key" .. math.random(1, keys))
end

done = function(summary, latency, requests)
    io.stderr:write(string.format("non-2xx: %d, socket errors: %d\n",
        summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
