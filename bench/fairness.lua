-- wrk script for the "ordinary" clients of bench/fairness.sh.  Run with as
-- many threads as connections (-tN -cN) so that each wrk thread is exactly one
-- client; done() then prints every client's completed request count, from
-- which fairness.sh computes Jain's index.  Each client sends one request and
-- waits for the answer before the next (plain keep-alive, no pipelining).
-- PACE_MS=N in the environment makes each client wait N ms between requests
-- (latency is measured from the send, so the wait is not counted).
--   wrk -t50 -c50 -d5s -s bench/fairness.lua http://127.0.0.1:PORT/hello.txt

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   responses = 0
end

function response(status, headers, body)
   responses = responses + 1
end

local pace = tonumber(os.getenv("PACE_MS") or "0") or 0
if pace > 0 then
   function delay()
      return pace
   end
end

function done(summary, latency, requests)
   local counts = {}
   for _, t in ipairs(threads) do
      table.insert(counts, tostring(t:get("responses")))
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.status + e.timeout))
   io.write("COUNTS " .. table.concat(counts, ",") .. "\n")
end
