package redisbroker

import "github.com/redis/go-redis/v9"

// The scripts run atomically in Redis, which is what makes the numbering
// agree with the history: no other command sees a Seq without its stream
// entry. KEYS are channels' head hashes and streams; a channel's share a
// hash tag, and on Redis Cluster one call carries one channel's only, so
// that its keys share a slot. Reads need no script: Broker.since uses
// MULTI/EXEC.

// runID defines the scripts' runID(), which returns the run_id of the
// Redis process, different after every start.
const runID = `
local function runID()
  local info = redis.call('INFO', 'server')
  local at = string.find(info, 'run_id:', 1, true)
  return string.sub(info, at + 7, at + 46)
end
`

// publishScript appends publications and announces them, each in turn as
// if alone; one call carries the publications that were waiting together.
//
// ARGV: history size, history age in ms (<= 0: none), the largest data
// announced inline (< 0: all), the head's TTL in ms (<= 0: none), "1" on a
// cluster (else "0"), a new epoch (for the channels that need one), then
// for each publication its data, its pub/sub channel, its meta ("" for
// none), which the stream entry keeps in a field m after d and t, its
// condition: "" for none, else "<epoch> <seq>", the head the channel must
// be at (as numbered by this Redis process) for the publication to be
// taken, and its idempotency key ("" for none), which the stream entry
// keeps in a last field k. KEYS: for each publication its channel's head,
// log and keys. Returns {epoch, seq} for each publication, one after
// another: {"", 0} for one whose condition failed, which took nothing.
//
// The announcement is "<epoch> <seq> d<data>", "<epoch> <seq> m<n>
// <meta><data>" for a publication with n bytes of meta, or "<epoch> <seq>
// r" when the data must be read from the stream; on a cluster it is sent
// with SPUBLISH.
//
// The head records the run_id of the Redis process that numbered the
// channel. Another process, which is a restarted server (whose data may
// be older than the numbers it handed out before the restart) or a
// promoted replica (which may have missed the latest publications), gives
// the channel a new epoch, so that no number is handed out twice in one
// epoch. Reading the run_id costs INFO's formatting, about 6 µs per call.
//
// Keys: the channel's keys sorted set maps the idempotency key of each
// keyed publication in the stream to its Seq (the score), and the head's
// field k is no more than the lowest score in it, absent when the set is
// empty or gone. A publication under a key in the set whose entry is still
// in history (in the stream, under that key, and not older than the age
// limit) returns that entry's position and does nothing else, before its
// condition is looked at, as the memory broker does: the entry's own k
// makes sure that a set left behind by a lost numbering never maps a key
// into another. The set is emptied with the stream when the channel starts
// a new epoch, trimmed when k falls behind the stream's first entry, and
// expires HistoryAge after the last keyed publication, when all of its
// publications are older than HistoryAge. A publication without a key
// pays only for reading k, and for trimming when k fell behind; with no
// history (size 0), keys are not kept.
var publishScript = redis.NewScript(runID + `
local size = tonumber(ARGV[1])
local age = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local announce = ARGV[5] == '1' and 'SPUBLISH' or 'PUBLISH'
local newEpoch = ARGV[6]
local me = runID()
local now = 0
if size > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Numbers go to commands as the strings they came as, or are formatted
-- once: Lua formats a number for every call it is passed to.
local sizeArg, ageArg, ttlArg, nowArg = ARGV[1], ARGV[2], ARGV[4], string.format('%d', now)

local function publish(head, log, keys, data, pubsub, meta, cond, key)
  local h = redis.call('HMGET', head, 'epoch', 'old', 'run', 'seq', 'k')
  local epoch = h[1]
  local current = epoch and h[3] == me
  if key ~= '' and current and size > 0 then
    local s = redis.call('ZSCORE', keys, key)
    if s then
      local id = string.format('%d-0', tonumber(s))
      local e = redis.call('XRANGE', log, id, id)
      local f = e[1] and e[1][2]
      if f and f[#f - 1] == 'k' and f[#f] == key and (age <= 0 or tonumber(f[4]) >= now - age) then
        return epoch, tonumber(s) -- taken already
      end
    end
  end
  if cond ~= '' and (not current or cond ~= epoch .. ' ' .. h[4]) then
    return '', 0
  end
  if not current then
    -- A new epoch, after a first use, a loss of data, or when another
    -- Redis process numbered the channel last: whatever the stream holds
    -- belongs to an older numbering, whose latest numbers this process
    -- may not have, and so do the keys.
    epoch = newEpoch
    redis.call('DEL', log, keys)
    redis.call('HSET', head, 'epoch', epoch, 'seq', 0, 'old', now, 'run', me)
    if h[5] then
      redis.call('HDEL', head, 'k')
      h[5] = false
    end
    h[2] = now
  end
  local seq = redis.call('HINCRBY', head, 'seq', 1)
  local seqArg = tostring(seq)
  if ttl > 0 then
    redis.call('PEXPIRE', head, ttlArg)
  end
  if size > 0 then
    if key == '' and meta == '' then
      redis.call('XADD', log, 'MAXLEN', sizeArg, seqArg .. '-0', 'd', data, 't', nowArg)
    elseif key == '' then
      redis.call('XADD', log, 'MAXLEN', sizeArg, seqArg .. '-0', 'd', data, 't', nowArg, 'm', meta)
    elseif meta == '' then
      redis.call('XADD', log, 'MAXLEN', sizeArg, seqArg .. '-0', 'd', data, 't', nowArg, 'k', key)
    else
      redis.call('XADD', log, 'MAXLEN', sizeArg, seqArg .. '-0', 'd', data, 't', nowArg, 'm', meta, 'k', key)
    end
    -- The first Seq in history: the stream keeps size entries, fewer
    -- after the age limit drops some.
    local first = seq - size + 1
    if key ~= '' then
      redis.call('ZADD', keys, seq, key)
      if not h[5] then
        redis.call('HSET', head, 'k', seq)
        h[5] = seq
      end
      if age > 0 then
        redis.call('PEXPIRE', keys, ageArg)
      end
    end
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
          first = math.max(first, tonumber(string.match(keep[1], '^%d+')))
        elseif last then
          local rest = tonumber(string.match(last[1], '^%d+')) + 1
          redis.call('HSET', head, 'old', last[2][4])
          redis.call('XTRIM', log, 'MINID', string.format('%d-0', rest))
          first = math.max(first, rest)
        end
      end
      -- An idle channel's history expires as a whole.
      redis.call('PEXPIRE', log, ageArg)
    end
    if h[5] and tonumber(h[5]) < first then
      -- Keys leave with their publications.
      redis.call('ZREMRANGEBYSCORE', keys, '-inf', string.format('(%d', first))
      local low = redis.call('ZRANGE', keys, 0, 0, 'WITHSCORES')
      if low[2] then
        redis.call('HSET', head, 'k', low[2])
      else
        redis.call('HDEL', head, 'k')
      end
    end
  end
  local msg = epoch .. ' ' .. seqArg
  if limit >= 0 and #meta + #data > limit then
    msg = msg .. ' r'
  elseif meta == '' then
    msg = msg .. ' d' .. data
  else
    msg = msg .. ' m' .. #meta .. ' ' .. meta .. data
  end
  redis.call(announce, pubsub, msg)
  return epoch, seq
end

local res = {}
for i = 0, #KEYS / 3 - 1 do
  local epoch, seq = publish(KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3], ARGV[7+5*i], ARGV[8+5*i], ARGV[9+5*i], ARGV[10+5*i], ARGV[11+5*i])
  res[2*i+1] = epoch
  res[2*i+2] = seq
end
return res
`)

// headScript returns channels' {epoch, seq}, giving a new channel its
// epoch so that the first publication is numbered in it, and so does a
// channel another Redis process numbered last, as in publishScript. One
// call reads the heads that were waiting together (on a cluster, those of
// one slot).
//
// KEYS: for each channel its head, log, keys and snapshot. ARGV: a new
// epoch, the heads' TTL in ms (<= 0: none). The snapshot lives as long as
// the head. Returns epoch and seq for each channel in turn.
var headScript = redis.NewScript(runID + `
local me = runID()
local ttl = tonumber(ARGV[2])
local res = {}
for i = 1, #KEYS, 4 do
  local head, snap = KEYS[i], KEYS[i+3]
  local h = redis.call('HMGET', head, 'epoch', 'seq', 'run')
  if not h[1] or h[3] ~= me then
    redis.call('DEL', KEYS[i+1], KEYS[i+2], snap)
    redis.call('HDEL', head, 'k')
    redis.call('HSET', head, 'epoch', ARGV[1], 'seq', 0, 'run', me)
    h = {ARGV[1], '0'}
  end
  if ttl > 0 then
    redis.call('PEXPIRE', head, ttl)
    redis.call('PEXPIRE', snap, ttl)
  end
  res[#res+1] = h[1]
  res[#res+1] = h[2]
end
return res
`)

// saveSnapshotScript keeps a State's value beside the channel's stream,
// unless the one kept is later in the same epoch, or the channel is in
// another epoch now (its numbering was lost, so the value is of no use).
//
// KEYS: head, snapshot. ARGV: epoch, seq, data, TTL in ms (<= 0: none).
// Returns 1 if it kept the value.
var saveSnapshotScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return 0
end
local cur = redis.call('HMGET', KEYS[2], 'epoch', 'seq')
if cur[1] == ARGV[1] and tonumber(cur[2]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'seq', ARGV[2], 'data', ARGV[3])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
`)
