//! Keyed limits and the 429 adapter through axum.
