//! Billing's SQL store: subscriptions, invoices and payments, one schema per
//! dialect (see [`crate::sql`]).
//!
//! The payment row is the intent: it is written, with its invoice, before the
//! provider is called, and `(account, idempotency_key)` is unique, so however
//! many requests, replicas or restarts race on one client key, exactly one
//! intent exists and every one of them charges under its provider key.
//! Finishing a payment is a compare-and-set on `status = 'pending'`: the first
//! finisher writes the invoice and the subscription, later ones change nothing.
//!
//! Grows with clients: one subscription row per account, one invoice and one
//! payment per subscribe attempt (kept: they are the billing history).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::{Db, DbError, Dialect, Migration};

/// The store's name (its migrations table is `_casebook_billing_migrations`).
pub const STORE: &str = "billing";

/// The longest account id stored (the gateway's `x-user-id`).
pub const MAX_ACCOUNT_LEN: usize = 128;

/// Version 1 as SQLite and PostgreSQL both read it (MySQL's differs: collations).
const PORTABLE_V1: &str = "
CREATE TABLE billing_subscriptions (
    account TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    payment_id TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE billing_invoices (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    plan TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX billing_invoices_by_account ON billing_invoices (account, created_ms);
CREATE TABLE billing_payments (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    plan TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    provider_key TEXT NOT NULL,
    charge_id TEXT,
    status TEXT NOT NULL,
    decline_reason TEXT,
    attempts BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (account, idempotency_key)
);";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "subscriptions, invoices, payments",
    sqlite: PORTABLE_V1,
    postgres: PORTABLE_V1,
    // Binary collation: keys and ids compare byte for byte, as on the other
    // engines (the default collation would make `Key` and `key` one key).
    mysql: "
CREATE TABLE billing_subscriptions (
    account VARCHAR(128) NOT NULL PRIMARY KEY,
    plan VARCHAR(64) NOT NULL,
    status VARCHAR(16) NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    payment_id VARCHAR(64) NOT NULL,
    updated_ms BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE billing_invoices (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    account VARCHAR(128) NOT NULL,
    plan VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    status VARCHAR(16) NOT NULL,
    created_ms BIGINT NOT NULL,
    INDEX billing_invoices_by_account (account, created_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE billing_payments (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    account VARCHAR(128) NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    invoice_id VARCHAR(64) NOT NULL,
    plan VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL,
    provider_key VARCHAR(128) NOT NULL,
    charge_id VARCHAR(128),
    status VARCHAR(16) NOT NULL,
    decline_reason VARCHAR(255),
    attempts BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE KEY billing_payments_by_key (account, idempotency_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;",
}];

/// Subscription states as stored (`past_due` is derived on read).
pub const ACTIVE: &str = "active";
pub const PAST_DUE: &str = "past_due";
pub const CANCELED: &str = "canceled";
/// Invoice states.
pub const OPEN: &str = "open";
pub const PAID: &str = "paid";
pub const FAILED: &str = "failed";
/// Payment states.
pub const PENDING: &str = "pending";
pub const SUCCEEDED: &str = "succeeded";
pub const DECLINED: &str = "declined";

/// An account's current subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub account: String,
    pub plan: String,
    pub status: String,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    #[serde(skip)]
    pub payment_id: String,
    pub updated_ms: i64,
}

/// One period's bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub id: String,
    #[serde(skip)]
    pub account: String,
    pub plan: String,
    pub amount_cents: i64,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub status: String,
    pub created_ms: i64,
}

/// One subscribe's payment: the intent, then its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub id: String,
    #[serde(skip)]
    pub account: String,
    #[serde(skip)]
    pub idempotency_key: String,
    #[serde(rename = "invoice")]
    pub invoice_id: String,
    #[serde(skip)]
    pub plan: String,
    pub amount_cents: i64,
    #[serde(skip)]
    pub provider_key: String,
    pub charge_id: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<String>,
    pub attempts: i64,
    pub created_ms: i64,
}

/// A new intent: the invoice and payment written together.
#[derive(Debug, Clone)]
pub struct Intent {
    pub account: String,
    pub idempotency_key: String,
    pub plan: String,
    pub amount_cents: i64,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub now_ms: i64,
}

/// The payment columns [`payment`] reads, in its order.
macro_rules! select_payments {
    () => {
        "SELECT id, account, idempotency_key, invoice_id, plan, amount_cents, provider_key, charge_id, status, decline_reason, attempts, created_ms FROM billing_payments"
    };
}

/// The billing store.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens `url` and migrates it.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        Ok(Self {
            db: Db::open(url, STORE, MIGRATIONS).await?,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    /// The payment recorded for a client key, if any.
    pub async fn payment_by_key(
        &self,
        account: &str,
        key: &str,
    ) -> Result<Option<Payment>, sqlx::Error> {
        const SQL: &str = concat!(
            select_payments!(),
            " WHERE account = $1 AND idempotency_key = $2"
        );
        let row = self
            .db
            .query(SQL)
            .bind(account.to_owned())
            .bind(key.to_owned())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| payment(&row)).transpose()
    }

    /// Records the intent, or finds the one a racing request recorded first:
    /// either way, the key's only payment.
    pub async fn record_intent(&self, intent: &Intent) -> Result<Payment, sqlx::Error> {
        let payment_id = new_id("pay");
        let invoice_id = new_id("inv");
        let inserted = async {
            let mut tx = self.db.pool().begin().await?;
            self.db
                .query(
                    "INSERT INTO billing_invoices (id, account, plan, amount_cents, period_start_ms, period_end_ms, status, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(invoice_id.clone())
                .bind(intent.account.clone())
                .bind(intent.plan.clone())
                .bind(intent.amount_cents)
                .bind(intent.period_start_ms)
                .bind(intent.period_end_ms)
                .bind(OPEN)
                .bind(intent.now_ms)
                .execute(&mut *tx)
                .await?;
            self.db
                .query(
                    "INSERT INTO billing_payments (id, account, idempotency_key, invoice_id, plan, amount_cents, provider_key, status, attempts, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(payment_id.clone())
                .bind(intent.account.clone())
                .bind(intent.idempotency_key.clone())
                .bind(invoice_id.clone())
                .bind(intent.plan.clone())
                .bind(intent.amount_cents)
                // Derived from the intent, so every retry of it charges under one key.
                .bind(format!("netflix-billing/{payment_id}"))
                .bind(PENDING)
                .bind(0_i64)
                .bind(intent.now_ms)
                .bind(intent.now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        let found = self
            .payment_by_key(&intent.account, &intent.idempotency_key)
            .await?;
        match (inserted, found) {
            (_, Some(payment)) => Ok(payment),
            // Inserted yet not found cannot happen; an insert that failed for
            // another reason than a racing intent (unique (account, key)) says why.
            (Err(error), None) => Err(error),
            (Ok(()), None) => Err(sqlx::Error::RowNotFound),
        }
    }

    /// Counts one more provider call for `payment_id`.
    pub async fn count_attempt(&self, payment_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        self.db
            .query(
                "UPDATE billing_payments SET attempts = attempts + 1, updated_ms = $1 WHERE id = $2",
            )
            .bind(now_ms)
            .bind(payment_id.to_owned())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Marks the payment succeeded, its invoice paid and the account subscribed
    /// for the invoice's period — once: a payment no longer pending is left
    /// as it is.
    pub async fn succeed(
        &self,
        payment: &Payment,
        charge_id: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let settled = self
            .settle(
                &mut tx,
                payment,
                "UPDATE billing_payments SET status = $1, charge_id = $2, updated_ms = $3 WHERE id = $4 AND status = $5",
                (SUCCEEDED, charge_id, PAID),
                now_ms,
            )
            .await?;
        if !settled {
            return tx.rollback().await;
        }
        let invoice = self
            .db
            .query("SELECT period_start_ms, period_end_ms FROM billing_invoices WHERE id = $1")
            .bind(payment.invoice_id.clone())
            .fetch_one(&mut *tx)
            .await?;
        let (start, end): (i64, i64) = (invoice.try_get(0)?, invoice.try_get(1)?);
        let upsert = match self.db.dialect() {
            Dialect::MySql => {
                "INSERT INTO billing_subscriptions (account, plan, status, period_start_ms, period_end_ms, payment_id, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON DUPLICATE KEY UPDATE plan = VALUES(plan), status = VALUES(status), period_start_ms = VALUES(period_start_ms), period_end_ms = VALUES(period_end_ms), payment_id = VALUES(payment_id), updated_ms = VALUES(updated_ms)"
            }
            Dialect::Sqlite | Dialect::Postgres => {
                "INSERT INTO billing_subscriptions (account, plan, status, period_start_ms, period_end_ms, payment_id, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account) DO UPDATE SET plan = excluded.plan, status = excluded.status, period_start_ms = excluded.period_start_ms, period_end_ms = excluded.period_end_ms, payment_id = excluded.payment_id, updated_ms = excluded.updated_ms"
            }
        };
        self.db
            .query(upsert)
            .bind(payment.account.clone())
            .bind(payment.plan.clone())
            .bind(ACTIVE)
            .bind(start)
            .bind(end)
            .bind(payment.id.clone())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Marks the payment declined and its invoice failed (once); the account's
    /// subscription is left as it was.
    pub async fn decline(
        &self,
        payment: &Payment,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let settled = self
            .settle(
                &mut tx,
                payment,
                "UPDATE billing_payments SET status = $1, decline_reason = $2, updated_ms = $3 WHERE id = $4 AND status = $5",
                (DECLINED, reason, FAILED),
                now_ms,
            )
            .await?;
        if !settled {
            return tx.rollback().await;
        }
        tx.commit().await
    }

    /// Moves a still-pending payment to `(status, detail)` with `update` (binding
    /// status, detail, now, id, pending) and its invoice to `invoice_status`;
    /// false when the payment was no longer pending (someone else finished it).
    async fn settle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        payment: &Payment,
        update: &'static str,
        (status, detail, invoice_status): (&'static str, &str, &'static str),
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let changed = self
            .db
            .query(update)
            .bind(status)
            .bind(detail.to_owned())
            .bind(now_ms)
            .bind(payment.id.clone())
            .bind(PENDING)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        self.db
            .query("UPDATE billing_invoices SET status = $1 WHERE id = $2")
            .bind(invoice_status)
            .bind(payment.invoice_id.clone())
            .execute(&mut **tx)
            .await?;
        Ok(true)
    }

    /// The account's subscription row, if it ever subscribed.
    pub async fn subscription(&self, account: &str) -> Result<Option<Subscription>, sqlx::Error> {
        let row = self
            .db
            .query(
                "SELECT account, plan, status, period_start_ms, period_end_ms, payment_id, updated_ms FROM billing_subscriptions WHERE account = $1",
            )
            .bind(account.to_owned())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| {
            Ok(Subscription {
                account: row.try_get(0)?,
                plan: row.try_get(1)?,
                status: row.try_get(2)?,
                period_start_ms: row.try_get(3)?,
                period_end_ms: row.try_get(4)?,
                payment_id: row.try_get(5)?,
                updated_ms: row.try_get(6)?,
            })
        })
        .transpose()
    }

    /// Cancels the account's subscription; `false` when it has none. Canceling
    /// a canceled one changes nothing.
    pub async fn cancel(&self, account: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
        self.db
            .query(
                "UPDATE billing_subscriptions SET status = $1, updated_ms = $2 WHERE account = $3 AND status <> $4",
            )
            .bind(CANCELED)
            .bind(now_ms)
            .bind(account.to_owned())
            .bind(CANCELED)
            .execute(self.db.pool())
            .await?;
        Ok(self.subscription(account).await?.is_some())
    }

    pub async fn invoice(&self, id: &str) -> Result<Option<Invoice>, sqlx::Error> {
        let row = self
            .db
            .query(
                "SELECT id, account, plan, amount_cents, period_start_ms, period_end_ms, status, created_ms FROM billing_invoices WHERE id = $1",
            )
            .bind(id.to_owned())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| invoice(&row)).transpose()
    }

    /// The account's newest invoices first, at most `limit`.
    pub async fn invoices(&self, account: &str, limit: i64) -> Result<Vec<Invoice>, sqlx::Error> {
        let rows = self
            .db
            .query(
                "SELECT id, account, plan, amount_cents, period_start_ms, period_end_ms, status, created_ms FROM billing_invoices WHERE account = $1 ORDER BY created_ms DESC, id DESC LIMIT $2",
            )
            .bind(account.to_owned())
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(invoice).collect()
    }

    /// Every payment of an account, oldest first (for tests and operators).
    pub async fn payments(&self, account: &str) -> Result<Vec<Payment>, sqlx::Error> {
        const SQL: &str = concat!(
            select_payments!(),
            " WHERE account = $1 ORDER BY created_ms, id"
        );
        let rows = self
            .db
            .query(SQL)
            .bind(account.to_owned())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(payment).collect()
    }
}

fn payment(row: &AnyRow) -> Result<Payment, sqlx::Error> {
    Ok(Payment {
        id: row.try_get(0)?,
        account: row.try_get(1)?,
        idempotency_key: row.try_get(2)?,
        invoice_id: row.try_get(3)?,
        plan: row.try_get(4)?,
        amount_cents: row.try_get(5)?,
        provider_key: row.try_get(6)?,
        charge_id: row.try_get(7)?,
        status: row.try_get(8)?,
        decline_reason: row.try_get(9)?,
        attempts: row.try_get(10)?,
        created_ms: row.try_get(11)?,
    })
}

fn invoice(row: &AnyRow) -> Result<Invoice, sqlx::Error> {
    Ok(Invoice {
        id: row.try_get(0)?,
        account: row.try_get(1)?,
        plan: row.try_get(2)?,
        amount_cents: row.try_get(3)?,
        period_start_ms: row.try_get(4)?,
        period_end_ms: row.try_get(5)?,
        status: row.try_get(6)?,
        created_ms: row.try_get(7)?,
    })
}

/// A random id with a type prefix (`pay_3f…`): unique without coordination
/// between replicas.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}
