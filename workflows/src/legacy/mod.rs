//! The legacy traffic workflows (`signalbox.canary`, `signalbox.bluegreen`): canary and
//! blue/green as they ran before they became strategies of the deploy workflow. Their code is
//! frozen, on the shared layer, so runs started before and their recorded histories replay;
//! a new deploy of either strategy is a `signalbox.deploy` run with a `strategy`.

pub(crate) mod bluegreen;
pub(crate) mod canary;
