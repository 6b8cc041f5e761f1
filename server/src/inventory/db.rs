//! The two SQL backends behind one connection type: SQLite (rusqlite, the default, one
//! file in the data directory) and PostgreSQL (the blocking `postgres` client).
//!
//! Queries are written once with SQLite's numbered placeholders (`?1`); for PostgreSQL
//! they are rewritten to `$1` and prepared once per connection. Values go in as
//! [`Value`] and rows come back as [`Row`] on both, so the query code does not know the
//! backend; where the dialects differ, callers ask [`Conn::backend`]. Owns no query and
//! decides nothing.

use std::collections::HashMap;

/// Which database a connection talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A failure of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(Box<rusqlite::Error>),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// A column held a value of another type than the query expects.
    #[error("column {column}: {message}")]
    Value { column: usize, message: String },
    /// PostgreSQL's COMMIT failed. Kept apart from other failures: when the connection
    /// dropped here the transaction may have committed, so it is not run again.
    #[error("commit failed")]
    Commit(#[source] Box<DbError>),
    /// A query that must return one row returned none.
    #[error("the query returned no row")]
    NoRow,
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::Sqlite(Box::new(e))
    }
}

impl DbError {
    /// The PostgreSQL SQLSTATE of the failure, if it is one.
    pub fn pg_code(&self) -> Option<&postgres::error::SqlState> {
        match self {
            DbError::Postgres(e) => e.code(),
            DbError::Commit(e) => e.pg_code(),
            _ => None,
        }
    }

    /// True when the PostgreSQL connection is gone (closed, or the server said it is
    /// shutting it down): a new connection is the remedy.
    pub fn connection_lost(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            DbError::Postgres(e) => {
                e.is_closed()
                    || matches!(
                        e.code(),
                        Some(c) if *c == SqlState::ADMIN_SHUTDOWN
                            || *c == SqlState::CRASH_SHUTDOWN
                            || *c == SqlState::CANNOT_CONNECT_NOW
                            || *c == SqlState::CONNECTION_FAILURE
                            || *c == SqlState::CONNECTION_EXCEPTION
                    )
                    || (e.code().is_none()
                        && e.as_db_error().is_none()
                        && std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()))
            }
            _ => false,
        }
    }

    /// True for a PostgreSQL serialization failure or deadlock: the transaction was
    /// rolled back and running it again is the remedy.
    pub fn retryable(&self) -> bool {
        use postgres::error::SqlState;
        matches!(
            self.pg_code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        )
    }
}

/// A parameter or column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Turns a Rust value into a [`Value`] (see the `p!` macro).
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}
macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_value!(i64, i32, u32, u64, usize, u16, u8);
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

/// Parameters of a query: `p![a, b, c]`.
macro_rules! p {
    ($($e:expr),* $(,)?) => {
        &[$($crate::inventory::db::ToValue::to_value(&$e)),*][..]
    };
}
pub(crate) use p;

/// Reads a [`Value`] back as a Rust value.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Result<Self, String> {
        let i = i64::from_value(v)?;
        u32::try_from(i).map_err(|_| format!("{i} is out of range"))
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Clone, Debug)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i` as `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, DbError> {
        let v = self.0.get(i).ok_or(DbError::Value {
            column: i,
            message: "no such column".into(),
        })?;
        T::from_value(v).map_err(|message| DbError::Value { column: i, message })
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl postgres::types::ToSql for Value {
    /// Sends the value as the type the server inferred for the parameter: integers as
    /// any integer type (or text), text as text, bytes as `bytea`.
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => i.to_string().to_sql(ty, out),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn sqlite_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Int(f as i64),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row(out))
}

fn pg_row(r: &postgres::Row) -> Result<Row, DbError> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => r.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// `?1` placeholders to PostgreSQL's `$1`.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `f`, which blocks on the `postgres` client's own runtime, where that is
/// allowed: the blocking client panics when called on a thread that drives a tokio
/// runtime, and the inventory is also called from async code (start-up, the writers'
/// set-up). On a multi-threaded runtime's worker it runs through `block_in_place`; on
/// a current-thread runtime on a thread of its own; elsewhere (blocking threads
/// included) as is.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Err(_) => f(),
    }
}

/// A PostgreSQL client with its prepared statements.
pub struct PgConn {
    /// Always `Some` until dropped (taken to close it off the runtime).
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            off_runtime(move || drop(c));
        }
    }
}

impl PgConn {
    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a PostgreSQL connection is open until dropped")
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let text = pg_sql(sql);
        let client = self.client();
        let st = off_runtime(|| client.prepare(&text))?;
        // Bounded: the inventory's queries are a fixed set (plus `IN` lists by length).
        if self.statements.len() > 512 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn params(values: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
        values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect()
    }
}

/// One connection to the inventory's database.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConn>),
}

impl Conn {
    /// A PostgreSQL connection from a client already connected.
    pub fn postgres(client: postgres::Client) -> Conn {
        Conn::Postgres(Box::new(PgConn {
            client: Some(client),
            statements: HashMap::new(),
        }))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// True when the PostgreSQL connection was lost (SQLite connections never are).
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            Conn::Postgres(p) => p.client.as_ref().is_none_or(|c| c.is_closed()),
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    /// Runs statements without parameters (`;`-separated).
    pub fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => c.execute_batch(sql).map_err(Into::into),
            Conn::Postgres(p) => {
                let client = p.client();
                off_runtime(|| client.batch_execute(sql)).map_err(Into::into)
            }
        }
    }

    /// Runs one statement; returns the number of rows changed.
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                Ok(st.execute(rusqlite::params_from_iter(params.iter()))? as u64)
            }
            Conn::Postgres(p) => {
                let st = p.statement(sql)?;
                let client = p.client();
                Ok(off_runtime(|| {
                    client.execute(&st, &PgConn::params(params))
                })?)
            }
        }
    }

    /// Every row of a query.
    pub fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let rows = st.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    sqlite_row(r, n)
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
            Conn::Postgres(p) => {
                let st = p.statement(sql)?;
                let client = p.client();
                off_runtime(|| client.query(&st, &PgConn::params(params)))?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    }

    /// The first row of a query, if any.
    pub fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query; none is an error.
    pub fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, DbError> {
        self.query_opt(sql, params)?.ok_or(DbError::NoRow)
    }

    /// Starts a write transaction: SQLite takes the write lock at once (`BEGIN
    /// IMMEDIATE`, so read-then-write checks run under it); PostgreSQL runs it
    /// `SERIALIZABLE`, so the same checks hold against a second rackseed on the same
    /// database (a conflict fails it with a serialization failure, which
    /// [`DbError::retryable`] reports and the inventory retries). Rolled back unless
    /// [`Tx::commit`] is called.
    pub fn transaction(&mut self) -> Result<Tx<'_>, DbError> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            Conn::Postgres(p) => {
                let client = p.client();
                off_runtime(|| client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE"))?
            }
        }
        Ok(Tx {
            conn: self,
            open: true,
        })
    }
}

/// An open transaction; derefs to its connection.
pub struct Tx<'a> {
    conn: &'a mut Conn,
    open: bool,
}

impl Tx<'_> {
    /// Commits the transaction.
    pub fn commit(mut self) -> Result<(), DbError> {
        self.open = false;
        self.conn.batch("COMMIT").map_err(|e| match e {
            e @ DbError::Postgres(_) => DbError::Commit(Box::new(e)),
            e => e,
        })
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves nothing to do: SQLite ends the transaction with
            // the connection's next BEGIN error, PostgreSQL with the lost connection.
            let _ = self.conn.batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d IN (?2, ?10)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d IN ($2, $10)"
        );
    }
}
