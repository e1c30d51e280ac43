package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the store's only writers: each runs atomically
// in Redis, so every state transition is a compare-and-set with its index
// changes, as bbolt's transactions are. ARGV[1] is always the key prefix.
// Keys are built inside the scripts, which is fine on a single Redis server
// (not on Redis Cluster; see docs/fleet.md).

// luaLib is prepended to every script.
const luaLib = `
local P = ARGV[1]
local BAND = 1099511627776 -- 2^40: the queue score is (100 - priority) * BAND + seq
local function jk(id) return P .. 'job:' .. id end
local function qk(m) return P .. 'q:' .. m end
local function push(id, model, prio, seq)
  redis.call('ZADD', qk(model), (100 - prio) * BAND + seq, id)
  redis.call('SADD', P .. 'models', model)
  redis.call('INCR', P .. 'queued')
end
local function pop(id, model)
  redis.call('ZREM', qk(model), id)
  if redis.call('ZCARD', qk(model)) == 0 then redis.call('SREM', P .. 'models', model) end
  redis.call('DECR', P .. 'queued')
end
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- head: the job Claim takes next from model's queue: of the oldest job of
-- each priority band, the highest priority aged by one per aging ms waited;
-- ties go to the lower seq.
local function head(model, now, aging)
  local q = qk(model)
  local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
  if #first == 0 then return nil end
  local best = first[1]
  if aging <= 0 then return best end
  local function eff(id, sc)
    local prio = 100 - math.floor(sc / BAND)
    local c = tonumber(redis.call('HGET', jk(id), 'c') or now)
    if now > c then prio = prio + math.floor((now - c) / aging) end
    return prio
  end
  local sc = tonumber(first[2])
  local bestEff, bestSeq = eff(best, sc), sc % BAND
  local band = math.floor(sc / BAND)
  while band < 200 do
    local nxt = redis.call('ZRANGEBYSCORE', q, (band + 1) * BAND, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #nxt == 0 then break end
    sc = tonumber(nxt[2])
    band = math.floor(sc / BAND)
    local e, seq = eff(nxt[1], sc), sc % BAND
    if e > bestEff or (e == bestEff and seq < bestSeq) then best, bestEff, bestSeq = nxt[1], e, seq end
  end
  return best
end
-- expire ends a running job whose claimer is gone: back to its queue with
-- the attempt counted, or failed with no attempts left.
local function expire(id, why, whenStr, whenUs, out)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'st', 'm', 'p', 's', 'a', 'ma', 'n')
  redis.call('ZREM', P .. 'running', id)
  if f[1] ~= 'running' then return end
  local att, maxatt = tonumber(f[5]), tonumber(f[6])
  redis.call('HDEL', k, 'tok', 'sa')
  if att < maxatt then
    push(id, f[2], tonumber(f[3]), tonumber(f[4]))
    redis.call('HSET', k, 'st', 'queued', 'e', why .. ' (node ' .. tostring(f[7]) .. ', attempt ' .. att .. ')')
    table.insert(out, {id, f[2], 'queued'})
  else
    redis.call('HSET', k, 'st', 'failed', 'fa', whenStr, 'e', why .. ' (node ' .. tostring(f[7]) .. ') after ' .. att .. ' attempts')
    redis.call('ZADD', P .. 'final', whenUs, id)
    table.insert(out, {id, f[2], 'failed'})
  end
end
`

// ARGV: P, id, model, priority, data, max attempts, created ms, max queued.
var scriptEnqueue = redis.NewScript(luaLib + `
local id, model, prio = ARGV[2], ARGV[3], tonumber(ARGV[4])
local k = jk(id)
if redis.call('EXISTS', k) == 1 then return {'conflict'} end
local maxq = tonumber(ARGV[8])
local queued = tonumber(redis.call('GET', P .. 'queued') or '0')
if maxq > 0 and queued >= maxq then return {'full', queued} end
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', k, 'd', ARGV[5], 'm', model, 'p', prio, 's', seq, 'st', 'queued', 'a', 0, 'ma', ARGV[6], 'c', ARGV[7])
redis.call('ZADD', P .. 'order', seq, id)
push(id, model, prio, seq)
return {'ok', seq}
`)

// ARGV: P, model, now ms, aging ms, started (RFC 3339), node, lease ms.
var scriptClaim = redis.NewScript(luaLib + `
local model = ARGV[2]
local id = head(model, tonumber(ARGV[3]), tonumber(ARGV[4]))
if not id then return {'empty'} end
local k = jk(id)
local st = redis.call('HGET', k, 'st')
if st ~= 'queued' then return {'corrupt', id .. ' in queue but ' .. tostring(st)} end
pop(id, model)
local tok = tostring(redis.call('INCR', P .. 'claims'))
redis.call('HINCRBY', k, 'a', 1)
redis.call('HSET', k, 'st', 'running', 'sa', ARGV[5], 'tok', tok, 'n', ARGV[6])
redis.call('ZADD', P .. 'running', nowms() + tonumber(ARGV[7]), id)
return {'ok', tok, redis.call('HGETALL', k)}
`)

// ARGV: P, id, op, token, when (RFC 3339), when µs, reason, result.
// Ops: complete, requeue, release (running, with the claimer's token),
// fail (queued, or running with the token), failq (queued), cancel (queued
// or running, any node).
var scriptTransition = redis.NewScript(luaLib + `
local id, op, tok = ARGV[2], ARGV[3], ARGV[4]
local k = jk(id)
local f = redis.call('HMGET', k, 'st', 'm', 'p', 's', 'a', 'ma', 'tok')
local st = f[1]
if not st then return {'notfound'} end
local allowed = {
  complete = {running = true}, requeue = {running = true}, release = {running = true},
  fail = {queued = true, running = true}, failq = {queued = true},
  cancel = {queued = true, running = true},
}
if not allowed[op][st] then return {'conflict', st} end
if st == 'running' and op ~= 'cancel' and f[7] ~= tok then return {'conflict', st} end
local model, prio, seq, att, maxatt = f[2], tonumber(f[3]), tonumber(f[4]), tonumber(f[5]), tonumber(f[6])
local to
if op == 'complete' then to = 'completed'
elseif op == 'fail' or op == 'failq' then to = 'failed'
elseif op == 'cancel' then to = 'cancelled'
elseif op == 'release' then
  to = 'queued'
  redis.call('HSET', k, 'a', math.max(att - 1, 0))
elseif att < maxatt then to = 'queued'
else to = 'failed' end
if st == 'queued' then pop(id, model) end
if st == 'running' then
  redis.call('ZREM', P .. 'running', id)
  redis.call('HDEL', k, 'tok')
end
if to == 'queued' then
  push(id, model, prio, seq)
  redis.call('HDEL', k, 'sa')
else
  redis.call('HSET', k, 'fa', ARGV[5])
  redis.call('ZADD', P .. 'final', ARGV[6], id)
end
if op == 'complete' then
  redis.call('SET', P .. 'result:' .. id, ARGV[8])
  redis.call('HDEL', k, 'e')
elseif op ~= 'cancel' and op ~= 'release' then
  redis.call('HSET', k, 'e', ARGV[7])
end
redis.call('HSET', k, 'st', to)
return {'ok', st, to}
`)

// ARGV: P, lease ms, then id, token pairs. Returns the ids whose token no
// longer matches (the lease was lost: the job was requeued or finished).
var scriptRenew = redis.NewScript(luaLib + `
local dl = nowms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', jk(id), 'tok') == ARGV[i + 1] then
    redis.call('ZADD', P .. 'running', 'XX', dl, id)
  else
    table.insert(lost, id)
  end
end
return lost
`)

// ARGV: P, when (RFC 3339), when µs, limit. Ends the running jobs whose
// lease deadline (Redis time) has passed.
var scriptReap = redis.NewScript(luaLib + `
local ids = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', nowms(), 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do expire(id, 'lease expired', ARGV[2], ARGV[3], out) end
return out
`)

// ARGV: P, when (RFC 3339), when µs, node. Ends the running jobs claimed by
// node: a restarted node's own jobs of its previous run.
var scriptRecover = redis.NewScript(luaLib + `
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'running', 0, -1)) do
  if redis.call('HGET', jk(id), 'n') == ARGV[4] then
    expire(id, 'interrupted: daemon restarted', ARGV[2], ARGV[3], out)
  end
end
return out
`)

// ARGV: P, now ms, aging ms. Returns model, id pairs: each queue's head.
var scriptHeads = redis.NewScript(luaLib + `
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', P .. 'models')) do
  local id = head(m, tonumber(ARGV[2]), tonumber(ARGV[3]))
  if id then
    table.insert(out, m)
    table.insert(out, id)
  end
end
return out
`)

// ARGV: P, before µs, limit. Deletes final jobs finished before; returns
// how many it looked at and how many it deleted.
var scriptCleanup = redis.NewScript(luaLib + `
local ids = redis.call('ZRANGEBYSCORE', P .. 'final', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
for _, id in ipairs(ids) do
  local st = redis.call('HGET', jk(id), 'st')
  redis.call('ZREM', P .. 'final', id)
  if st == 'completed' or st == 'failed' or st == 'cancelled' then
    redis.call('DEL', jk(id), P .. 'result:' .. id)
    redis.call('ZREM', P .. 'order', id)
    n = n + 1
  end
end
return {#ids, n}
`)

// ARGV: P, model, id, now ms, aging ms. Returns id's 0-based place in the
// order Claim takes model's queue in (head, again and again), or -1 when
// id is not queued there. Without aging that is its rank; with aging, the
// priority bands (each in arrival order) are merged as head picks: at each
// step the band whose oldest job has the highest aged priority, ties to
// the lower seq. Each band is read 64 jobs at a time, by rank.
var scriptPosition = redis.NewScript(luaLib + `
local q = qk(ARGV[2])
local target, now, aging = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rank = redis.call('ZRANK', q, target)
if not rank then return -1 end
if aging <= 0 then return rank end
local n = redis.call('ZCARD', q)
local bands, start = {}, 0
while start < n do
  local sc = tonumber(redis.call('ZRANGE', q, start, start, 'WITHSCORES')[2])
  local b = math.floor(sc / BAND)
  local stop = redis.call('ZCOUNT', q, '-inf', (b + 1) * BAND - 1)
  table.insert(bands, {band = b, r = start, stop = stop, buf = {}, i = 1})
  start = stop
end
-- load sets bd's id, seq and aged priority from its job at rank bd.r;
-- false once the band is used up.
local function load(bd)
  if bd.r >= bd.stop then return false end
  if bd.i > #bd.buf then
    bd.buf, bd.i = redis.call('ZRANGE', q, bd.r, math.min(bd.r + 63, bd.stop - 1), 'WITHSCORES'), 1
  end
  bd.id, bd.seq = bd.buf[bd.i], tonumber(bd.buf[bd.i + 1]) % BAND
  local prio = 100 - bd.band
  local c = tonumber(redis.call('HGET', jk(bd.id), 'c') or now)
  if now > c then prio = prio + math.floor((now - c) / aging) end
  bd.eff = prio
  return true
end
local live = {}
for _, bd in ipairs(bands) do
  if load(bd) then table.insert(live, bd) end
end
local pos = 0
while #live > 0 do
  local best = 1
  for k = 2, #live do
    local a, b = live[k], live[best]
    if a.eff > b.eff or (a.eff == b.eff and a.seq < b.seq) then best = k end
  end
  local bd = live[best]
  if bd.id == target then return pos end
  pos = pos + 1
  bd.r, bd.i = bd.r + 1, bd.i + 2
  if not load(bd) then table.remove(live, best) end
end
return -1
`)
