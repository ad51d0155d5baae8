-- wrk script: GET /api/key for a random preloaded key out of KG_KEYS, named as kg-bench names
-- them (bench/00000000 ...).
local keys = tonumber(os.getenv("KG_KEYS") or "100000")

request = function()
    return wrk.format("GET", string.format("/api/key?key=bench/%08d", math.random(0, keys - 1)))
end

done = function(summary, latency, requests)
    io.stderr:write(string.format("non-2xx: %d, socket errors: %d\n",
        summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
