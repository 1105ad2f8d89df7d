-- wrk script that only adds a machine-readable summary line; requests are
-- still wrk's static ones (no per-request Lua), so it costs nothing per request.
--   wrk -t1 -c100 -d5s -s bench/report.lua http://127.0.0.1:PORT/hello.txt

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.status + e.timeout))
end
