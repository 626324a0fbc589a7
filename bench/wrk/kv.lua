-- wrk script for the kvstore benchmark, so our generator's figures can be
-- checked by a tool we did not write. Same keys (key-0000000 ..), same value
-- bytes, same workloads as bench/load.ts.
--
--   wrk -t1 -c50 -d10s -s bench/wrk/kv.lua http://127.0.0.1:3000 -- API WORKLOAD KEYS VALUE_SIZE [DIST]
--
-- API is kv (kvstore and the minimal server: /v1/kv/{key}) or etcd (v3 JSON
-- gateway: POST /v3/kv/put, POST /v3/kv/range serializable, base64 key/value).
-- WORKLOAD is get, put or mixed (90% GET, 10% PUT). DIST is uniform (default).
-- The last line printed is one JSON object with ops/s and percentiles in µs.

local api, workload, keys, value, value64

local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function base64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end

local function make_value(size)
  local alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'
  local t = {}
  for i = 0, size - 1 do
    local j = (i % #alphabet) + 1
    t[#t + 1] = alphabet:sub(j, j)
  end
  return table.concat(t)
end

function init(args)
  api = args[1] or 'kv'
  workload = args[2] or 'get'
  keys = tonumber(args[3] or '100000')
  value = make_value(tonumber(args[4] or '100'))
  value64 = base64(value)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

local function key_name(i)
  return string.format('key-%07d', i)
end

function request()
  local op = workload
  if workload == 'mixed' then op = (math.random() < 0.1) and 'put' or 'get' end
  local k = key_name(math.random(0, keys - 1))
  if api == 'etcd' then
    local body
    if op == 'get' then
      body = '{"key":"' .. base64(k) .. '","serializable":true}'
      return wrk.format('POST', '/v3/kv/range', { ['Content-Type'] = 'application/json' }, body)
    end
    body = '{"key":"' .. base64(k) .. '","value":"' .. value64 .. '"}'
    return wrk.format('POST', '/v3/kv/put', { ['Content-Type'] = 'application/json' }, body)
  end
  if op == 'get' then return wrk.format('GET', '/v1/kv/' .. k) end
  return wrk.format('PUT', '/v1/kv/' .. k, { ['Content-Type'] = 'application/octet-stream' }, value)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"ops":%d,"durationUs":%d,"opsPerSec":%.1f,"errors":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
