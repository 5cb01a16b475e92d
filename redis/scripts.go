package redisbroker

import "github.com/redis/go-redis/v9"

// The scripts run atomically in Redis, which is what makes the numbering
// agree with the history: no other command sees a Seq without its stream
// entry. KEYS are always a channel's head hash and stream, which share a
// hash tag, so the scripts also run on Redis Cluster. Reads need no
// script: Broker.since uses MULTI/EXEC.

// publishScript appends a publication and announces it.
//
// KEYS: head, log. ARGV: data, a new epoch (used if the channel has none),
// history size, history age in ms (<= 0: none), the largest data announced
// inline (< 0: all), the pub/sub channel, the head's TTL in ms (<= 0: none).
// Returns {epoch, seq}.
//
// The announcement is "<epoch> <seq> d<data>", or "<epoch> <seq> r" when
// the data must be read from the stream.
var publishScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  -- A new epoch, after a first use or a loss of data: whatever the stream
  -- holds belongs to an older numbering.
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local seqs = string.format('%d', seq)
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end

local size = tonumber(ARGV[3])
if size > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', size, seqs .. '-0', 'd', ARGV[1], 't', now)
  local age = tonumber(ARGV[4])
  if age > 0 then
    -- Drop entries older than age from the front, at most 100 per
    -- publication; Since ignores any that remain.
    local cutoff = now - age
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if tonumber(oldest[2][4]) < cutoff then
      local keep
      local last
      for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 100)) do
        if tonumber(e[2][4]) >= cutoff then
          keep = e[1]
          break
        end
        last = e[1]
      end
      if not keep then
        keep = string.format('%d-0', tonumber(string.match(last, '^%d+')) + 1)
      end
      redis.call('XTRIM', KEYS[2], 'MINID', keep)
    end
    -- An idle channel's history expires as a whole.
    redis.call('PEXPIRE', KEYS[2], age)
  end
end

local limit = tonumber(ARGV[5])
local msg = epoch .. ' ' .. seqs
if limit < 0 or #ARGV[1] <= limit then
  msg = msg .. ' d' .. ARGV[1]
else
  msg = msg .. ' r'
end
redis.call('PUBLISH', ARGV[6], msg)
return {epoch, seq}
`)

// headScript returns a channel's {epoch, seq}, giving a new channel its
// epoch so that the first publication is numbered in it.
//
// KEYS: head, log. ARGV: a new epoch, the head's TTL in ms (<= 0: none).
var headScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not h[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0)
  h = {ARGV[1], '0'}
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return h
`)
