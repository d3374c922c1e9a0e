//! Tarantool requests for the `native`, `lua`, `raw` and `noop` targets, built as
//! raw msgpack (uuid arguments as strings for the procedures, as the report's
//! clients sent them; msgpack uuids for plain INSERT / SELECT, which have no
//! procedure to parse a string), and the checks on their answers.

use anyhow::{anyhow, bail, Context, Result};
use rmp::encode;
use rusty_tarantool::tarantool::packets::{Code, CommandPacket, Key};
use rusty_tarantool::tarantool::{Client, ClientConfig};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

use crate::data::{Dataset, Op, PAGE_LEN, READ_DIALOG_LEN, READ_LIMIT};
use crate::model::Target;

/// How long one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Helpers that fill or measure a million messages take longer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);
const RECONNECT: Duration = Duration::from_millis(200);

/// Tarantool's msgpack extension types.
const MP_UUID: i8 = 2;
const MP_DATETIME: i8 = 4;

/// What the bench needs to know about the server's schema (`bench_info`).
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub created_at_is_datetime: bool,
    pub dialogs_space: i32,
    pub dialog_id_k: i32,
    /// The bucket count the data is spread over (for the `raw` target's tuples).
    pub bucket_count: u32,
    pub version: String,
}

/// A client for a request-at-a-time connection or a pipelined one (the crate
/// pipelines every request sent through one `Client`).
pub fn client(addr: &str, user: &str, password: &str, admin: bool) -> Client {
    let timeout = if admin {
        ADMIN_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    ClientConfig::new(addr, user, password)
        .set_timeout_time_ms(timeout.as_millis() as u64)
        .set_reconnect_time_ms(RECONNECT.as_millis() as u64)
        .build()
}

fn call(function: &str, args: Vec<u8>) -> CommandPacket {
    CommandPacket {
        code: Code::CALL,
        internal_fields: vec![(Key::FUNCTION, rmpv::Value::from(function))],
        command_field: vec![(Key::TUPLE, args)],
    }
}

fn put_uuid(buf: &mut Vec<u8>, u: &Uuid) {
    // fixext 16, type MP_UUID, the 16 bytes in order.
    buf.push(0xd8);
    buf.push(MP_UUID as u8);
    buf.extend_from_slice(u.as_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = encode::write_str(buf, s);
}

fn put_uuid_str(buf: &mut Vec<u8>, u: &Uuid) {
    let mut s = [0u8; uuid::fmt::Hyphenated::LENGTH];
    put_str(buf, u.hyphenated().encode_lower(&mut s));
}

fn array(len: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(192);
    let _ = encode::write_array_len(&mut buf, len);
    buf
}

/// What a correct answer looks like.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// A CALL returning one string: the new message id.
    Id,
    /// A CALL returning one array of this many tuples.
    CallTuples(usize),
    /// A SELECT returning this many tuples.
    SelectTuples(usize),
    /// An INSERT returning the stored tuple.
    Inserted,
    /// Anything that is not an error.
    Any,
}

/// The request `target` makes for `op`.
pub fn request(
    target: Target,
    op: &Op,
    ds: &Dataset,
    info: &ServerInfo,
) -> (CommandPacket, Expect) {
    let (new_fn, get_fn) = match target {
        Target::Lua => ("lua_new_dialog", "lua_get_dialog"),
        _ => ("new_dialog", "get_dialog"),
    };
    match (target, op) {
        (Target::Noop, _) => (call("bench_noop", array(0)), Expect::Any),
        (Target::Raw, Op::Write { dialog, from, to }) => {
            let mut t = array(7);
            put_uuid(&mut t, &Uuid::now_v7());
            put_uuid(&mut t, dialog);
            put_uuid(&mut t, from);
            put_uuid(&mut t, to);
            put_str(&mut t, &ds.text);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            if info.created_at_is_datetime {
                // fixext 8, type MP_DATETIME: seconds, little-endian.
                t.push(0xd7);
                t.push(MP_DATETIME as u8);
                t.extend_from_slice(&(now.as_secs() as i64).to_le_bytes());
            } else {
                let _ = encode::write_uint(&mut t, now.as_micros() as u64);
            }
            // The seventh field, as new_dialog writes it: the dialog's bucket.
            let bucket = dialogs::bucket::bucket_id(*dialog, info.bucket_count);
            let _ = encode::write_uint(&mut t, u64::from(bucket));
            let p = CommandPacket {
                code: Code::INSERT,
                internal_fields: vec![(Key::SPACE, rmpv::Value::from(info.dialogs_space))],
                command_field: vec![(Key::TUPLE, t)],
            };
            (p, Expect::Inserted)
        }
        (Target::Raw, Op::Read(i)) => (
            select(info, &ds.read_dialogs[*i], false, READ_LIMIT as i32),
            Expect::SelectTuples(READ_DIALOG_LEN),
        ),
        (Target::Raw, Op::Page) => (
            select(info, &ds.page_dialog, true, PAGE_LEN as i32),
            Expect::SelectTuples(PAGE_LEN),
        ),
        (_, Op::Write { dialog, from, to }) => {
            let mut a = array(4);
            put_uuid_str(&mut a, dialog);
            put_uuid_str(&mut a, from);
            put_uuid_str(&mut a, to);
            put_str(&mut a, &ds.text);
            (call(new_fn, a), Expect::Id)
        }
        (_, Op::Read(i)) => {
            let mut a = array(1);
            put_str(&mut a, &ds.read_dialog_strs[*i]);
            (call(get_fn, a), Expect::CallTuples(READ_DIALOG_LEN))
        }
        (_, Op::Page) => {
            let mut a = array(2);
            put_uuid_str(&mut a, &ds.page_dialog);
            let _ = encode::write_map_len(&mut a, 2);
            put_str(&mut a, "reverse");
            let _ = encode::write_bool(&mut a, true);
            put_str(&mut a, "limit");
            let _ = encode::write_uint(&mut a, PAGE_LEN as u64);
            (call(get_fn, a), Expect::CallTuples(PAGE_LEN))
        }
    }
}

fn select(info: &ServerInfo, dialog: &Uuid, newest_first: bool, limit: i32) -> CommandPacket {
    let mut key = array(1);
    put_uuid(&mut key, dialog);
    // Iterators: EQ = 0, REQ = 1 (equal keys, descending).
    let iterator = if newest_first { 1 } else { 0 };
    CommandPacket {
        code: Code::SELECT,
        internal_fields: vec![
            (Key::SPACE, rmpv::Value::from(info.dialogs_space)),
            (Key::INDEX, rmpv::Value::from(info.dialog_id_k)),
            (Key::ITERATOR, rmpv::Value::from(iterator)),
            (Key::LIMIT, rmpv::Value::from(limit)),
            (Key::OFFSET, rmpv::Value::from(0)),
        ],
        command_field: vec![(Key::KEY, key)],
    }
}

/// Checks an answer's shape without decoding the tuples. A C procedure on
/// Tarantool before 2.10 can only return tuples, so its value arrives wrapped
/// in one more one-element array than a Lua function's (`[[id]]` rather than
/// `[id]`), and a page may come as one result per tuple; every shape is
/// accepted.
pub fn check(expect: Expect, data: &[u8]) -> Result<(), String> {
    let mut r = data;
    let bad = |e: &dyn std::fmt::Display| format!("bad reply: {e}");
    let outer = rmp::decode::read_array_len(&mut r).map_err(|e| bad(&e))? as usize;
    let want = |what: &str, got: usize, n: usize| {
        if got == n {
            Ok(())
        } else {
            Err(format!("expected {n} {what}, got {got}"))
        }
    };
    match expect {
        Expect::Any => Ok(()),
        Expect::Inserted => want("tuple", outer, 1),
        Expect::SelectTuples(n) => want("tuples", outer, n),
        Expect::Id => {
            want("value", outer, 1)?;
            // 0x91: a one-element array around the id (a C procedure on 2.6).
            if r.first() == Some(&0x91) {
                r = &r[1..];
            }
            let len = rmp::decode::read_str_len(&mut r).map_err(|e| format!("id: {e}"))?;
            want("id characters", len as usize, 36)
        }
        Expect::CallTuples(n) => {
            // One result per tuple, or all tuples in one array result.
            if outer == n {
                return Ok(());
            }
            want("value", outer, 1)?;
            let mut inner = rmp::decode::read_array_len(&mut r).map_err(|e| bad(&e))? as usize;
            if inner == 1 && n != 1 {
                inner = rmp::decode::read_array_len(&mut r).map_err(|e| bad(&e))? as usize;
            }
            want("tuples", inner, n)
        }
    }
}

/// One request: sends, awaits, checks.
pub async fn execute(client: &Client, packet: CommandPacket, expect: Expect) -> Result<(), String> {
    match client.send_command(packet).await {
        Ok(resp) => check(expect, &resp.data),
        Err(e) => Err(e.to_string()),
    }
}

/// Calls a helper or procedure with msgpack `args` and decodes the first value.
pub async fn call_value(client: &Client, function: &str, args: rmpv::Value) -> Result<rmpv::Value> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &args)?;
    let resp = client
        .send_command(call(function, buf))
        .await
        .with_context(|| format!("calling {function}"))?;
    let v = rmpv::decode::read_value(&mut &resp.data[..])?;
    match v {
        rmpv::Value::Array(mut a) if !a.is_empty() => Ok(a.swap_remove(0)),
        rmpv::Value::Array(_) => Ok(rmpv::Value::Nil),
        other => bail!("{function}: unexpected reply {other}"),
    }
}

/// A map's value by string key.
pub fn get<'a>(map: &'a rmpv::Value, key: &str) -> Result<&'a rmpv::Value> {
    map.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map(|(_, v)| v)
        .ok_or_else(|| anyhow!("no `{key}` in {map}"))
}

pub fn get_f64(map: &rmpv::Value, key: &str) -> Result<f64> {
    let v = get(map, key)?;
    v.as_f64()
        .or_else(|| v.as_i64().map(|i| i as f64))
        .or_else(|| v.as_u64().map(|i| i as f64))
        .ok_or_else(|| anyhow!("`{key}` is not a number: {v}"))
}

/// The schema facts the `raw` target needs.
pub async fn server_info(admin: &Client) -> Result<ServerInfo> {
    let v = call_value(admin, "bench_info", rmpv::Value::Array(vec![])).await?;
    Ok(ServerInfo {
        created_at_is_datetime: get(&v, "created_at")?.as_str() == Some("datetime"),
        dialogs_space: get_f64(&v, "dialogs_space")? as i32,
        dialog_id_k: get_f64(&v, "dialog_id_k")? as i32,
        bucket_count: get_f64(&v, "bucket_count")? as u32,
        version: get(&v, "version")?.as_str().unwrap_or("?").to_owned(),
    })
}

fn s(u: &Uuid) -> rmpv::Value {
    rmpv::Value::from(u.to_string())
}

/// Preloads, through procedure `function`, the read dialogs and the long page
/// dialog (when `page` is set), each from the same sender to the same recipient.
pub async fn fill(admin: &Client, function: &str, ds: &Dataset, page: bool) -> Result<()> {
    let dialogs: Vec<rmpv::Value> = ds
        .read_dialog_strs
        .iter()
        .map(|d| rmpv::Value::from(d.as_str()))
        .collect();
    let args = |dialogs: Vec<rmpv::Value>, n: usize| {
        rmpv::Value::Array(vec![
            rmpv::Value::from(function),
            rmpv::Value::Array(dialogs),
            rmpv::Value::from(n as u64),
            s(&ds.fill_from),
            s(&ds.fill_to),
            rmpv::Value::from(ds.text.as_str()),
        ])
    };
    call_value(admin, "bench_fill", args(dialogs, READ_DIALOG_LEN)).await?;
    if page {
        call_value(
            admin,
            "bench_fill",
            args(vec![s(&ds.page_dialog)], ds.page_dialog_len),
        )
        .await?;
    }
    Ok(())
}

/// Preloads the read dialogs and the long page dialog through `client`'s
/// new_dialog (a router: the data lands in each dialog's bucket), `in_flight`
/// calls at a time on the one pipelined connection.
pub async fn fill_by_calls(client: &Client, ds: &Dataset, in_flight: usize) -> Result<()> {
    let mut dialogs: Vec<Uuid> = Vec::new();
    for d in &ds.read_dialogs {
        dialogs.extend(std::iter::repeat_n(*d, READ_DIALOG_LEN));
    }
    dialogs.extend(std::iter::repeat_n(ds.page_dialog, ds.page_dialog_len));
    let dialogs = std::sync::Arc::new(dialogs);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (client, dialogs, next) = (client.clone(), dialogs.clone(), next.clone());
        let (from, to, text) = (ds.fill_from, ds.fill_to, ds.text.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(dialog) = dialogs.get(i) else {
                    return Ok::<(), String>(());
                };
                let mut a = array(4);
                put_uuid_str(&mut a, dialog);
                put_uuid_str(&mut a, &from);
                put_uuid_str(&mut a, &to);
                put_str(&mut a, &text);
                execute(&client, call("new_dialog", a), Expect::Id).await?;
            }
        }));
    }
    for t in tasks {
        t.await?
            .map_err(|e| anyhow!("filling through new_dialog: {e}"))?;
    }
    Ok(())
}

/// ns per call inside the server (see `bench_micro` in bench/lua/bench.lua).
pub async fn micro(admin: &Client, ds: &Dataset, calls: usize) -> Result<rmpv::Value> {
    let args = rmpv::Value::Array(vec![
        rmpv::Value::from(calls as u64),
        s(&ds.read_dialogs[0]),
        s(&ds.fill_from),
        s(&ds.fill_to),
        rmpv::Value::from(ds.text.as_str()),
        s(&ds.page_dialog),
    ]);
    call_value(admin, "bench_micro", args).await
}

/// Growth of the space, its indexes and the arena for `messages` new messages.
pub async fn memory(admin: &Client, ds: &Dataset, messages: usize) -> Result<rmpv::Value> {
    let dialogs: Vec<rmpv::Value> = ds.users[..1000.min(ds.users.len())].iter().map(s).collect();
    let args = rmpv::Value::Array(vec![
        rmpv::Value::from(messages as u64),
        rmpv::Value::Array(dialogs),
        s(&ds.fill_from),
        s(&ds.fill_to),
        rmpv::Value::from(ds.text.as_str()),
    ]);
    call_value(admin, "bench_memory", args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reads_shapes() {
        // [["0123...36 chars"]] style replies, built by hand.
        let mut id = array(1);
        put_str(&mut id, &Uuid::nil().to_string());
        assert!(check(Expect::Id, &id).is_ok());
        let mut wrapped = array(1);
        let _ = encode::write_array_len(&mut wrapped, 1);
        put_str(&mut wrapped, &Uuid::nil().to_string());
        assert!(check(Expect::Id, &wrapped).is_ok());
        let mut tuples = array(1);
        let _ = encode::write_array_len(&mut tuples, 2);
        assert!(check(Expect::CallTuples(2), &tuples).is_ok());
        assert!(check(Expect::CallTuples(3), &tuples).is_err());
        assert!(check(Expect::SelectTuples(1), &array(1)).is_ok());
    }
}
