//! The PostgreSQL target: the same columns and indexes as the `dialogs` space,
//! `INSERT ... RETURNING id` and `SELECT ... WHERE dialog_id = $1 ORDER BY id
//! LIMIT $2`, through tokio-postgres (which pipelines the queries of concurrent
//! tasks on one connection).

use anyhow::{bail, Context, Result};
use std::sync::Arc;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::data::{Dataset, Op, PAGE_LEN, READ_DIALOG_LEN, READ_LIMIT};
use crate::model::Durability;
use crate::tt::REQUEST_TIMEOUT;

/// The table, as the `dialogs` space: message id (server-generated), dialog,
/// sender, recipient, text, creation time; the primary key and the
/// (dialog_id, id) index that pages a dialog.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dialogs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    dialog_id uuid NOT NULL,
    user_from_id uuid NOT NULL,
    user_to_id uuid NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS dialogs_dialog_id_k ON dialogs (dialog_id, id);
";

const INSERT: &str = "INSERT INTO dialogs (dialog_id, user_from_id, user_to_id, text) \
                      VALUES ($1, $2, $3, $4) RETURNING id";
const SELECT: &str = "SELECT id, dialog_id, user_from_id, user_to_id, text, created_at \
                      FROM dialogs WHERE dialog_id = $1 ORDER BY id LIMIT $2";
const SELECT_NEWEST: &str = "SELECT id, dialog_id, user_from_id, user_to_id, text, created_at \
                             FROM dialogs WHERE dialog_id = $1 ORDER BY id DESC LIMIT $2";

/// One connection with its prepared statements.
pub struct PgConn {
    pub client: Client,
    insert: Statement,
    select: Statement,
    select_newest: Statement,
}

async fn connect_plain(conninfo: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here shows
        // up as failed queries, which are counted.
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates the table (if missing) on a connection of its own.
pub async fn create_schema(conninfo: &str) -> Result<()> {
    connect_plain(conninfo).await?.batch_execute(SCHEMA).await?;
    Ok(())
}

pub async fn connect(conninfo: &str) -> Result<Arc<PgConn>> {
    let client = connect_plain(conninfo).await?;
    let insert = client.prepare(INSERT).await?;
    let select = client.prepare(SELECT).await?;
    let select_newest = client.prepare(SELECT_NEWEST).await?;
    Ok(Arc::new(PgConn {
        client,
        insert,
        select,
        select_newest,
    }))
}

/// Sets the session's durability to match Tarantool's `wal_mode`.
pub async fn set_durability(conn: &PgConn, d: Durability) -> Result<()> {
    let v = match d {
        Durability::Write => "off",
        Durability::Fsync => "on",
    };
    conn.client
        .batch_execute(&format!("SET synchronous_commit = {v}"))
        .await?;
    Ok(())
}

/// Preloads the read dialogs and the long dialog.
pub async fn setup(conn: &PgConn, ds: &Dataset) -> Result<()> {
    let fill = "INSERT INTO dialogs (dialog_id, user_from_id, user_to_id, text) \
                SELECT d, $2, $3, $4 FROM unnest($1::uuid[]) AS d, generate_series(1, $5::int)";
    conn.client
        .execute(
            fill,
            &[
                &ds.read_dialogs,
                &ds.fill_from,
                &ds.fill_to,
                &ds.text,
                &(READ_DIALOG_LEN as i32),
            ],
        )
        .await?;
    conn.client
        .execute(
            fill,
            &[
                &vec![ds.page_dialog],
                &ds.fill_from,
                &ds.fill_to,
                &ds.text,
                &(ds.page_dialog_len as i32),
            ],
        )
        .await?;
    conn.client.batch_execute("VACUUM ANALYZE dialogs").await?;
    Ok(())
}

/// One request: sends, awaits, checks the number of rows.
pub async fn execute(conn: &PgConn, op: &Op, ds: &Dataset) -> Result<(), String> {
    let want = |got: usize, n: usize| {
        if got == n {
            Ok(())
        } else {
            Err(format!("expected {n} rows, got {got}"))
        }
    };
    let work = async {
        match op {
            Op::Write { dialog, from, to } => conn
                .client
                .query_one(&conn.insert, &[dialog, from, to, &ds.text])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Op::Read(i) => {
                let rows = conn
                    .client
                    .query(&conn.select, &[&ds.read_dialogs[*i], &READ_LIMIT])
                    .await
                    .map_err(|e| e.to_string())?;
                want(rows.len(), READ_DIALOG_LEN)
            }
            Op::Page => {
                let rows = conn
                    .client
                    .query(&conn.select_newest, &[&ds.page_dialog, &(PAGE_LEN as i64)])
                    .await
                    .map_err(|e| e.to_string())?;
                want(rows.len(), PAGE_LEN)
            }
            // The inbox's calls have no PostgreSQL twin (model::Target::serves).
            Op::List(_) | Op::Mark(_) => Err("not a PostgreSQL workload".to_owned()),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// Size of `messages` rows of TEXT_CHARS characters: a separate table of the
/// same definition, filled, vacuumed, measured and dropped.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PgMemory {
    pub rows: i64,
    pub total: i64,
    pub heap: i64,
    pub indexes: i64,
}

pub async fn memory(conn: &PgConn, ds: &Dataset, messages: usize) -> Result<PgMemory> {
    let c = &conn.client;
    c.batch_execute(
        "DROP TABLE IF EXISTS dialogs_mem; CREATE TABLE dialogs_mem (LIKE dialogs INCLUDING ALL);",
    )
    .await?;
    let dialogs: Vec<Uuid> = ds.users[..1000.min(ds.users.len())].to_vec();
    c.execute(
        "INSERT INTO dialogs_mem (dialog_id, user_from_id, user_to_id, text) \
         SELECT ($1::uuid[])[1 + g % array_length($1::uuid[], 1)], $2, $3, $4 \
         FROM generate_series(1, $5::int) AS g",
        &[
            &dialogs,
            &ds.fill_from,
            &ds.fill_to,
            &ds.text,
            &(messages as i32),
        ],
    )
    .await?;
    c.batch_execute("VACUUM ANALYZE dialogs_mem").await?;
    let row = c
        .query_one(
            "SELECT count(*), pg_total_relation_size('dialogs_mem'), \
             pg_relation_size('dialogs_mem'), pg_indexes_size('dialogs_mem') FROM dialogs_mem",
            &[],
        )
        .await?;
    let m = PgMemory {
        rows: row.get(0),
        total: row.get(1),
        heap: row.get(2),
        indexes: row.get(3),
    };
    c.batch_execute("DROP TABLE dialogs_mem").await?;
    if m.rows != messages as i64 {
        bail!("dialogs_mem has {} rows, expected {messages}", m.rows);
    }
    Ok(m)
}
