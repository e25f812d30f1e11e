//! Inventory, reservations, orders and checkout.
//!
//! (Skeleton: the inventory helper fills this module.)

use std::sync::Arc;

use axum::Router;
use casebook_kit::runtime::StartError;

use crate::cart::CartLines;
use crate::service::AreaEnv;

/// Opens the inventory's stores and returns its routes.
pub async fn mount(_env: &AreaEnv<'_>, _cart: Arc<dyn CartLines>) -> Result<Router, StartError> {
    Ok(Router::new())
}
