//! The cluster's locks, in Redis, shared by every node.
//!
//! Keys, under the cluster's prefix `p`: `p:lock:<tenant>/<room>/<name>` (hash: `token`,
//! `user`, `kind`, `owner` (the holding socket's id, `""` for an HTTP caller) and `exp`, the
//! expiry in Unix ms by Redis's clock), `p:locks` (a sorted set of the lock keys by expiry,
//! what sweeps read) and `p:lock-fence` (the fencing counter). In Redis Cluster mode the
//! prefix is a hash tag, so they share a slot.
//!
//! Every operation is one script, and every script first claims the resource's lock if its
//! time is up by Redis's `TIME` (returning its token as `reaped`, for the caller to
//! announce), so an expiry is claimed once cluster-wide whoever comes first: the node that
//! granted the lock (it wakes at the expiry), any node's sweep ([`REAP`]), or the next
//! operation on the resource. The lock keys have no TTL of their own: a lock's end is
//! always claimed by a script, so always announced.

use redis::Script;

use super::{Acquired, Answer, Held, Holder, Kind, Outcome, Owner};
use crate::redis_conn::RedisConn;
use crate::rooms::Id;

/// What every script starts with. KEYS: 1 the lock, 2 the expiry set. ARGV: 1 the lock's
/// key without the prefix (its member in the set). Leaves `now` (ms), `t` (TIME), `cur`
/// (`token`, `user`, `kind`, `owner`, `exp`; `cur[1]` false when no lock is held) and
/// `reaped` (the token of the lock claimed as expired, or `''`).
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'token', 'user', 'kind', 'owner', 'exp')
local reaped = ''
if cur[1] and tonumber(cur[5]) <= now then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  reaped = cur[1]
  cur = {false}
end
"#;

/// KEYS: 3 the fencing counter. ARGV: 2 ttl ms, 3 user (`''`: none), 4 kind, 5 owner.
/// Returns `{'ok', token, exp, reaped}` or `{'locked', token, user, kind, exp, reaped}`.
const ACQUIRE: &str = r#"
if cur[1] then return {'locked', cur[1], cur[2], cur[3], cur[5], reaped} end
local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('INCR', KEYS[3])
if f < us then
  f = us
  redis.call('SET', KEYS[3], string.format('%.0f', us))
end
local token = string.format('%.0f', f)
local exp = string.format('%.0f', now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'token', token, 'user', ARGV[3], 'kind', ARGV[4], 'owner', ARGV[5], 'exp', exp)
redis.call('ZADD', KEYS[2], exp, ARGV[1])
return {'ok', token, exp, reaped}
"#;

/// ARGV: 2 token, 3 owner (`''`: any), 4 `release` or a ttl ms to renew for, 5 what a
/// token that is not the lock's answers (`not_holder` or `lost`).
/// Returns `{'ok', exp, reaped}`, `{'not_holder', '', reaped}` or `{'lost', '', reaped}`.
const CHANGE: &str = r#"
if reaped ~= '' and reaped == ARGV[2] then return {'lost', '', reaped} end
if not cur[1] or cur[1] ~= ARGV[2] then return {ARGV[5], '', reaped} end
if ARGV[3] ~= '' and cur[4] ~= ARGV[3] then return {'not_holder', '', reaped} end
if ARGV[4] == 'release' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'ok', '0', reaped}
end
local exp = string.format('%.0f', now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'exp', exp)
redis.call('ZADD', KEYS[2], exp, ARGV[1])
return {'ok', exp, reaped}
"#;

/// Read-only. KEYS: 1 the lock. Returns `{token, user, kind, exp}`, or `{}` when none is
/// held (or its time is up).
const GET: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'token', 'user', 'kind', 'exp')
if not cur[1] or tonumber(cur[4]) <= now then return {} end
return cur
"#;

/// KEYS: 1 the expiry set. ARGV: 1 the lock keys' prefix, 2 the most to claim.
/// Returns `{key, token, key, token, ...}` of the locks claimed as expired.
const REAP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, k in ipairs(due) do
  local lock = ARGV[1] .. k
  local cur = redis.call('HMGET', lock, 'token', 'exp')
  if cur[1] and tonumber(cur[2]) <= now then
    redis.call('DEL', lock)
    redis.call('ZREM', KEYS[1], k)
    table.insert(out, k)
    table.insert(out, cur[1])
  elseif not cur[1] then
    redis.call('ZREM', KEYS[1], k)
  end
end
return out
"#;

pub struct RedisLocks {
    conn: RedisConn,
    /// `p:lock:`
    lock_prefix: String,
    expiry: String,
    fence: String,
    acquire: Script,
    change: Script,
    get: Script,
    reap: Script,
}

fn parse_u64(s: &str) -> Result<u64, redis::RedisError> {
    s.parse().map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a lock script answered a number that is none",
            s.to_owned(),
        ))
    })
}

fn reaped(s: Option<&String>) -> Result<Option<u64>, redis::RedisError> {
    match s.map(String::as_str) {
        None | Some("") => Ok(None),
        Some(token) => parse_u64(token).map(Some),
    }
}

fn user(s: &str) -> Option<Id> {
    Id::parse(s)
}

impl RedisLocks {
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
        Self {
            conn,
            lock_prefix: format!("{prefix}:lock:"),
            expiry: format!("{prefix}:locks"),
            fence: format!("{prefix}:lock-fence"),
            acquire: Script::new(&format!("{PRELUDE}{ACQUIRE}")),
            change: Script::new(&format!("{PRELUDE}{CHANGE}")),
            get: Script::new(GET),
            reap: Script::new(REAP),
        }
    }

    pub async fn acquire(
        &self,
        key: &str,
        ttl_ms: u64,
        user_id: Option<&Id>,
        owner: &Owner,
    ) -> Result<Answer<Acquired>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .acquire
            .key(format!("{}{key}", self.lock_prefix))
            .key(&self.expiry)
            .key(&self.fence)
            .arg(key)
            .arg(ttl_ms)
            .arg(user_id.map_or("", Id::as_str))
            .arg(owner.kind().as_str())
            .arg(owner.as_str())
            .invoke_async(&mut conn)
            .await?;
        match reply.as_slice() {
            [ok, token, exp, rest @ ..] if ok == "ok" => Ok(Answer {
                answer: Acquired::Granted {
                    token: parse_u64(token)?,
                    expires_ms: parse_u64(exp)?,
                },
                reaped: reaped(rest.first())?,
            }),
            [locked, token, holder, kind, exp, rest @ ..] if locked == "locked" => Ok(Answer {
                answer: Acquired::Locked(Held {
                    token: parse_u64(token)?,
                    holder: Holder {
                        user_id: user(holder),
                        kind: Kind::parse(kind),
                    },
                    expires_ms: parse_u64(exp)?,
                }),
                reaped: reaped(rest.first())?,
            }),
            other => Err(unexpected(other)),
        }
    }

    pub async fn release(
        &self,
        key: &str,
        token: u64,
        owner: &Owner,
    ) -> Result<Answer<Outcome>, redis::RedisError> {
        self.run_change(key, token, owner, "release".into(), "not_holder")
            .await
    }

    pub async fn renew(
        &self,
        key: &str,
        token: u64,
        owner: &Owner,
        ttl_ms: u64,
    ) -> Result<Answer<Outcome>, redis::RedisError> {
        self.run_change(key, token, owner, ttl_ms.to_string(), "lost")
            .await
    }

    async fn run_change(
        &self,
        key: &str,
        token: u64,
        owner: &Owner,
        what: String,
        not_held: &str,
    ) -> Result<Answer<Outcome>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .change
            .key(format!("{}{key}", self.lock_prefix))
            .key(&self.expiry)
            .arg(key)
            .arg(token)
            .arg(owner.as_str())
            .arg(what)
            .arg(not_held)
            .invoke_async(&mut conn)
            .await?;
        let [outcome, exp, reaped_token] = reply.as_slice() else {
            return Err(unexpected(&reply));
        };
        let answer = match outcome.as_str() {
            "ok" => Outcome::Done {
                expires_ms: parse_u64(exp)?,
            },
            "not_holder" => Outcome::NotHolder,
            "lost" => Outcome::Lost,
            _ => return Err(unexpected(&reply)),
        };
        Ok(Answer {
            answer,
            reaped: reaped(Some(reaped_token))?,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Held>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .get
            .key(format!("{}{key}", self.lock_prefix))
            .invoke_async(&mut conn)
            .await?;
        match reply.as_slice() {
            [] => Ok(None),
            [token, holder, kind, exp] => Ok(Some(Held {
                token: parse_u64(token)?,
                holder: Holder {
                    user_id: user(holder),
                    kind: Kind::parse(kind),
                },
                expires_ms: parse_u64(exp)?,
            })),
            other => Err(unexpected(other)),
        }
    }

    /// Claims up to `max` expired locks of the cluster: their keys and tokens.
    pub async fn reap(&self, max: usize) -> Result<Vec<(String, u64)>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .reap
            .key(&self.expiry)
            .arg(&self.lock_prefix)
            .arg(max)
            .invoke_async(&mut conn)
            .await?;
        reply
            .chunks(2)
            .filter_map(|pair| match pair {
                [key, token] => Some(parse_u64(token).map(|t| (key.clone(), t))),
                _ => None,
            })
            .collect()
    }
}

fn unexpected(reply: &[String]) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected answer of a lock script",
        format!("{reply:?}"),
    ))
}
