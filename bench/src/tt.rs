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

use crate::data::{Dataset, MarkOp, Msg, Op, LIST_LEN, PAGE_LEN, READ_DIALOG_LEN, READ_LIMIT};
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
    /// `dialogs_inbox` and its `activity` index, where the server has the inbox
    /// (for the `raw` target's `list`: the same entries by a plain SELECT).
    pub inbox: Option<(i32, i32)>,
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
    /// A CALL returning list_dialogs' map, with this many entries in `dialogs`.
    Listed(usize),
    /// A CALL returning this unsigned number (mark_read's unread count after).
    Count(u64),
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
        (Target::Raw, Op::List(i)) => {
            // The newest entries by the index list_dialogs walks; a server
            // without the inbox answers with an error, which the cell counts.
            let (space, index) = info.inbox.unwrap_or((0, 0));
            let mut key = array(1);
            put_uuid(&mut key, &ds.list_users[*i]);
            let p = CommandPacket {
                code: Code::SELECT,
                internal_fields: vec![
                    (Key::SPACE, rmpv::Value::from(space)),
                    (Key::INDEX, rmpv::Value::from(index)),
                    (Key::ITERATOR, rmpv::Value::from(ITERATOR_REQ)),
                    (Key::LIMIT, rmpv::Value::from(LIST_LEN as i32)),
                    (Key::OFFSET, rmpv::Value::from(0)),
                ],
                command_field: vec![(Key::KEY, key)],
            };
            (p, Expect::SelectTuples(LIST_LEN))
        }
        (_, Op::List(i)) => {
            let mut a = array(2);
            put_str(&mut a, &ds.list_user_strs[*i]);
            let _ = encode::write_map_len(&mut a, 1);
            put_str(&mut a, "limit");
            let _ = encode::write_uint(&mut a, LIST_LEN as u64);
            (call("list_dialogs", a), Expect::Listed(LIST_LEN))
        }
        (_, Op::Mark(op)) => {
            // load::run_cell never sends a Mark(None): it counts it as an error.
            let MarkOp {
                user,
                dialog,
                up_to,
            } = op.unwrap_or(MarkOp {
                user: Uuid::nil(),
                dialog: Uuid::nil(),
                up_to: Uuid::nil(),
            });
            let mut a = array(3);
            put_uuid_str(&mut a, &user);
            put_uuid_str(&mut a, &dialog);
            put_uuid_str(&mut a, &up_to);
            // Read up to the dialog's newest message: nothing is left unread.
            (call("mark_read", a), Expect::Count(0))
        }
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

/// IPROTO iterators: equal keys, ascending and descending.
const ITERATOR_EQ: i32 = 0;
const ITERATOR_REQ: i32 = 1;

fn select(info: &ServerInfo, dialog: &Uuid, newest_first: bool, limit: i32) -> CommandPacket {
    let mut key = array(1);
    put_uuid(&mut key, dialog);
    let iterator = if newest_first {
        ITERATOR_REQ
    } else {
        ITERATOR_EQ
    };
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
        Expect::Listed(n) => {
            let v = single_value(data)?;
            let dialogs = v
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("dialogs")))
                .and_then(|(_, d)| d.as_array())
                .ok_or_else(|| format!("expected a map with `dialogs`, got {v}"))?;
            want("entries", dialogs.len(), n)
        }
        Expect::Count(n) => match single_value(data)?.as_u64() {
            Some(got) if got == n => Ok(()),
            _ => Err(format!("expected {n}, got {}", single_value(data)?)),
        },
    }
}

/// The one value of a CALL's reply, unwrapped from the one-element arrays a C
/// procedure's result may come in (2.x: a tuple around it).
fn single_value(data: &[u8]) -> Result<rmpv::Value, String> {
    let mut v = rmpv::decode::read_value(&mut &data[..]).map_err(|e| format!("bad reply: {e}"))?;
    loop {
        match v {
            rmpv::Value::Array(mut a) if a.len() == 1 => v = a.swap_remove(0),
            other => return Ok(other),
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
        inbox: match (get_f64(&v, "inbox_space"), get_f64(&v, "inbox_activity")) {
            (Ok(s), Ok(i)) => Some((s as i32, i as i32)),
            _ => None,
        },
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

/// Preloads the read dialogs and the long page dialog (when `page` is set)
/// through `client`'s new_dialog (a router: the data lands in each dialog's
/// bucket), `in_flight` calls at a time on the one pipelined connection.
pub async fn fill_by_calls(
    client: &Client,
    ds: &Dataset,
    in_flight: usize,
    page: bool,
) -> Result<()> {
    let mut dialogs: Vec<Uuid> = Vec::new();
    for d in &ds.read_dialogs {
        dialogs.extend(std::iter::repeat_n(*d, READ_DIALOG_LEN));
    }
    if page {
        dialogs.extend(std::iter::repeat_n(ds.page_dialog, ds.page_dialog_len));
    }
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

fn msg_args(m: &Msg) -> rmpv::Value {
    rmpv::Value::Array(vec![s(&m.dialog), s(&m.from), s(&m.to)])
}

/// Largest number of messages one `bench_fill_pairs` call stores: its arguments
/// and reply stay a few megabytes.
const FILL_PAIRS_CHUNK: usize = 50_000;

/// Stores `msgs` through the server's own new_dialog (`bench_fill_pairs`, many
/// fibers, no network per call); returns the new ids in the order of `msgs`.
pub async fn fill_pairs(admin: &Client, msgs: &[Msg], text: &str) -> Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(msgs.len());
    for chunk in msgs.chunks(FILL_PAIRS_CHUNK) {
        let args = rmpv::Value::Array(vec![
            rmpv::Value::from("new_dialog"),
            rmpv::Value::Array(chunk.iter().map(msg_args).collect()),
            rmpv::Value::from(text),
        ]);
        let v = call_value(admin, "bench_fill_pairs", args).await?;
        let got = v
            .as_array()
            .ok_or_else(|| anyhow!("bench_fill_pairs: not an array: {v}"))?;
        if got.len() != chunk.len() {
            bail!(
                "bench_fill_pairs: {} ids for {} messages",
                got.len(),
                chunk.len()
            );
        }
        for id in got {
            ids.push(parse_id(id)?);
        }
    }
    Ok(ids)
}

fn parse_id(v: &rmpv::Value) -> Result<Uuid> {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow!("not a message id: {v}"))
}

/// Stores `msgs` through `client`'s new_dialog (a router: each lands in its
/// dialog's bucket), `in_flight` calls at a time on the one pipelined
/// connection; returns the new ids in the order of `msgs`.
pub async fn fill_pairs_by_calls(
    client: &Client,
    msgs: &[Msg],
    text: &str,
    in_flight: usize,
) -> Result<Vec<Uuid>> {
    let msgs = std::sync::Arc::new(msgs.to_vec());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (client, msgs, next, text) =
            (client.clone(), msgs.clone(), next.clone(), text.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(m) = msgs.get(i) else {
                    return Ok::<_, String>(got);
                };
                let mut a = array(4);
                put_uuid_str(&mut a, &m.dialog);
                put_uuid_str(&mut a, &m.from);
                put_uuid_str(&mut a, &m.to);
                put_str(&mut a, &text);
                let resp = client
                    .send_command(call("new_dialog", a))
                    .await
                    .map_err(|e| e.to_string())?;
                let v = single_value(&resp.data)?;
                let id = parse_id(&v).map_err(|e| e.to_string())?;
                got.push((i, id));
            }
        }));
    }
    let mut ids = vec![Uuid::nil(); msgs.len()];
    for t in tasks {
        for (i, id) in t
            .await?
            .map_err(|e| anyhow!("storing through new_dialog: {e}"))?
        {
            ids[i] = id;
        }
    }
    Ok(ids)
}

/// Rows still in the outbox of the storage `client` is connected to
/// (`bench_outbox_len` of bench/lua/storage.lua; 0 where there is none).
pub async fn outbox_len(client: &Client) -> Result<u64> {
    let v = call_value(client, "bench_outbox_len", rmpv::Value::Array(vec![])).await?;
    v.as_u64()
        .ok_or_else(|| anyhow!("bench_outbox_len: not a count: {v}"))
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

/// Growth of the inbox's spaces for `dialogs` new dialogs of one message each
/// (`bench_inbox_memory` in bench/lua/bench.lua).
pub async fn inbox_memory(admin: &Client, ds: &Dataset, dialogs: usize) -> Result<rmpv::Value> {
    let args = rmpv::Value::Array(vec![
        rmpv::Value::from(dialogs as u64),
        rmpv::Value::from(ds.text.as_str()),
    ]);
    call_value(admin, "bench_inbox_memory", args).await
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

    #[test]
    fn check_reads_inbox_replies() {
        // [{dialogs = [e, e], unread_messages = 0}] and [[{...}]] (2.x).
        let listed = |wrapped: bool, n: usize| {
            let map = rmpv::Value::Map(vec![
                (
                    rmpv::Value::from("dialogs"),
                    rmpv::Value::Array(vec![rmpv::Value::Nil; n]),
                ),
                (rmpv::Value::from("unread_messages"), rmpv::Value::from(0)),
            ]);
            let inner = if wrapped {
                rmpv::Value::Array(vec![map])
            } else {
                map
            };
            let mut buf = Vec::new();
            let _ = rmpv::encode::write_value(&mut buf, &rmpv::Value::Array(vec![inner]));
            buf
        };
        assert!(check(Expect::Listed(2), &listed(false, 2)).is_ok());
        assert!(check(Expect::Listed(2), &listed(true, 2)).is_ok());
        assert!(check(Expect::Listed(20), &listed(false, 2)).is_err());
        let count = |n: u64| {
            let mut buf = Vec::new();
            let v = rmpv::Value::Array(vec![rmpv::Value::Array(vec![rmpv::Value::from(n)])]);
            let _ = rmpv::encode::write_value(&mut buf, &v);
            buf
        };
        assert!(check(Expect::Count(0), &count(0)).is_ok());
        assert!(check(Expect::Count(0), &count(3)).is_err());
    }
}
