-- wrk script: POST random entity ids to our predict endpoint or to `feast serve`.
-- args: <ids file> <ours|feast> <batch size> <delay ms per request and connection (0 = closed loop)>
local ids, mode, batch, pause = {}, "ours", 1, 0
local counter = 0
-- our API needs a key (serving/auth): bench/scoring.py creates one and passes it in WRK_API_KEY
local headers = {["Content-Type"] = "application/json"}
local api_key = os.getenv("WRK_API_KEY")
if api_key and api_key ~= "" then headers["Authorization"] = "Bearer " .. api_key end

function init(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  mode = args[2] or "ours"
  batch = tonumber(args[3] or "1")
  pause = tonumber(args[4] or "0")
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local pick = {}
  for i = 1, batch do pick[i] = ids[math.random(#ids)] end
  local list = table.concat(pick, ",")
  local body
  if mode == "feast" then
    body = '{"feature_service":"game_ltv_v1","entities":{"user_id":[' .. list .. ']}}'
  else
    body = '{"entities":{"user_id":[' .. list .. ']}}'
  end
  return wrk.format("POST", nil, headers, body)
end

-- Pacing: an exponentially distributed think time per request (mean `pause`). A fixed delay would keep
-- the connections in phase: they all start together, so they would fire in bursts of one request per
-- connection, and the latency measured would be the queueing inside each burst. Random think times
-- spread the arrivals out (close to Poisson arrivals at the target rate).
function delay()
  if pause <= 0 then return 0 end
  return -math.log(1 - math.random()) * pause
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
