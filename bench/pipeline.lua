-- wrk script for HTTP/1.1 pipelining: every write carries DEPTH requests
-- (default 16) for the URL's path, sent back to back in one buffer.
--   wrk -t1 -c100 -d5s -s bench/pipeline.lua http://127.0.0.1:PORT/hello.txt -- 16
-- wrk counts each response, so requests/s is per request, not per batch;
-- latency is recorded once per batch (time until the last response of it).

local depth = 16
local batch

function init(args)
   depth = tonumber(args[1]) or depth
   local one = wrk.format(nil, wrk.path)
   batch = string.rep(one, depth)
end

function request()
   return batch
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d depth=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.status + e.timeout, depth))
end
