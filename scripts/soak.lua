-- wrk script for scripts/soak.sh: rotates over a list of paths and can
-- pipeline several requests per write.
--
--   wrk -t1 -c20 -d60s -s scripts/soak.lua URL -- DEPTH PATH [PATH ...]
--
-- DEPTH requests go out in one write (1 = ordinary keep-alive); each write
-- takes the next path of the list, so the mix of paths is exact.  Headers
-- given with -H (e.g. "Connection: close") are part of every request.
-- done() prints one machine-readable line with every error class wrk
-- tracks, kept apart, because the soak judges them separately:
--
--   SOAK requests=N bytes=N duration_us=N connect=N read=N write=N
--        timeout=N status=N p50_us=N p99_us=N max_us=N
--
-- status counts responses with a status above 399 (wrk's "Non-2xx or 3xx
-- responses"); latency is recorded once per write (per batch when
-- pipelining).

local depth = 1
local batches = {}
local next_batch = 0

function init(args)
   depth = tonumber(args[1]) or 1
   local paths = {}
   for k = 2, #args do
      paths[#paths + 1] = args[k]
   end
   if #paths == 0 then
      paths[1] = wrk.path
   end
   for k, p in ipairs(paths) do
      batches[k] = string.rep(wrk.format(nil, p), depth)
   end
end

function request()
   next_batch = next_batch % #batches + 1
   return batches[next_batch]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "SOAK requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.bytes, summary.duration,
      e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), latency.max))
end
