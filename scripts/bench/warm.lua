-- wrk script: GET every key of KG_KEYS exactly once across all threads (to warm the cache),
-- then only cheap health checks until wrk's duration ends.
local keys = tonumber(os.getenv("KG_KEYS") or "100000")
local threads = 0

setup = function(thread)
    thread:set("id", threads)
    threads = threads + 1
end

init = function(args)
    step = 2 -- the scripts run wrk with -t2
    next_key = id
end

request = function()
    if next_key >= keys then
        return wrk.format("GET", "/api/health")
    end
    local key = next_key
    next_key = next_key + step
    return wrk.format("GET", string.format("/api/key?key=bench/%08d", key))
end
