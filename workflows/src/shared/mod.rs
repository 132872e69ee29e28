//! The bottom layer every workflow type stands on: activity options, why a run stops, the
//! compensations (saga), and the steps every strategy shares. Nothing here knows a strategy.

pub(crate) mod grant;
pub(crate) mod options;
pub(crate) mod saga;
pub(crate) mod steps;
pub(crate) mod stop;
