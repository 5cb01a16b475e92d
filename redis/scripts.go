package redisbroker

import "github.com/redis/go-redis/v9"

// The scripts run atomically in Redis, which is what makes the numbering
// agree with the history: no other command sees a Seq without its stream
// entry. KEYS are channels' head hashes and streams; a channel's share a
// hash tag, and on Redis Cluster one call carries one channel's only, so
// that its keys share a slot. Reads need no script: Broker.since uses
// MULTI/EXEC.

// publishScript appends publications and announces them, each in turn as
// if alone; one call carries the publications that were waiting together.
//
// ARGV: history size, history age in ms (<= 0: none), the largest data
// announced inline (< 0: all), the head's TTL in ms (<= 0: none), "1" on
// a cluster (else "0"), then for each publication its data, a new epoch
// (used if the channel has none) and its pub/sub channel. KEYS: for each
// publication its channel's head and log. Returns {epoch, seq} for each
// publication, one after another.
//
// The announcement is "<epoch> <seq> d<data>", or "<epoch> <seq> r" when
// the data must be read from the stream. On a cluster it is sent with
// SPUBLISH, and a channel whose head was written by another master (see
// clusterCheck) starts a new epoch.
var publishScript = redis.NewScript(`
local size = tonumber(ARGV[1])
local age = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local cluster = ARGV[5] == '1'
local me = cluster and redis.call('CLUSTER', 'MYID') or false
local announce = cluster and 'SPUBLISH' or 'PUBLISH'
local now = 0
if size > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function publish(head, log, data, newEpoch, pubsub)
  local h = redis.call('HMGET', head, 'epoch', 'old', 'node')
  local epoch = h[1]
  if not epoch or (me and h[3] ~= me) then
    -- A new epoch, after a first use, a loss of data or a change of
    -- master: whatever the stream holds belongs to an older numbering.
    epoch = newEpoch
    redis.call('DEL', log)
    redis.call('HSET', head, 'epoch', epoch, 'seq', 0, 'old', now)
    if me then
      redis.call('HSET', head, 'node', me)
    end
    h[2] = now
  end
  local seq = redis.call('HINCRBY', head, 'seq', 1)
  if ttl > 0 then
    redis.call('PEXPIRE', head, ttl)
  end
  if size > 0 then
    redis.call('XADD', log, 'MAXLEN', size, seq .. '-0', 'd', data, 't', now)
    if age > 0 then
      -- The head's 'old' is at most the time of the stream's oldest
      -- entry, so that entries need reading only when some may be older
      -- than age: drop those from the front, at most 100 per publication;
      -- Since ignores any that remain.
      local cutoff = now - age
      if tonumber(h[2] or 0) < cutoff then
        local keep
        local last
        for _, e in ipairs(redis.call('XRANGE', log, '-', '+', 'COUNT', 100)) do
          if tonumber(e[2][4]) >= cutoff then
            keep = e
            break
          end
          last = e
        end
        if keep then
          redis.call('HSET', head, 'old', keep[2][4])
          if last then
            redis.call('XTRIM', log, 'MINID', keep[1])
          end
        elseif last then
          redis.call('HSET', head, 'old', last[2][4])
          redis.call('XTRIM', log, 'MINID', string.format('%d-0', tonumber(string.match(last[1], '^%d+')) + 1))
        end
      end
      -- An idle channel's history expires as a whole.
      redis.call('PEXPIRE', log, age)
    end
  end
  local msg = epoch .. ' ' .. seq
  if limit < 0 or #data <= limit then
    msg = msg .. ' d' .. data
  else
    msg = msg .. ' r'
  end
  redis.call(announce, pubsub, msg)
  return epoch, seq
end

local res = {}
for i = 0, #KEYS / 2 - 1 do
  local epoch, seq = publish(KEYS[2*i+1], KEYS[2*i+2], ARGV[6+3*i], ARGV[7+3*i], ARGV[8+3*i])
  res[2*i+1] = epoch
  res[2*i+2] = seq
end
return res
`)

// headScript returns a channel's {epoch, seq}, giving a new channel its
// epoch so that the first publication is numbered in it. On a cluster, a
// channel whose head another master wrote gets a new epoch too, as in
// publishScript.
//
// KEYS: head, log. ARGV: a new epoch, the head's TTL in ms (<= 0: none),
// "1" on a cluster (else "0").
var headScript = redis.NewScript(`
local me = ARGV[3] == '1' and redis.call('CLUSTER', 'MYID') or false
local h = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'node')
if not h[1] or (me and h[3] ~= me) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0)
  if me then
    redis.call('HSET', KEYS[1], 'node', me)
  end
  h = {ARGV[1], '0'}
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {h[1], h[2]}
`)
