//! When a fallback fires.

use seawall_core::classify::{Classified, Classify, Outcome};
use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
use serde::{Deserialize, Serialize};

/// Why a fallback fired; the `cause` label of `seawall_fallback_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// A layer further in rejected the call.
    Rejected(RejectionKind),
    /// The call failed with an error that is not a rejection.
    Error,
    /// The call answered, but the classifier called the answer a failure (say, a 500).
    Failure,
    /// The call answered, and the classifier called the answer an overload refusal (say, a
    /// 503 or a 429); only with [`OnFailure::or_overload`].
    Overload,
}

impl Cause {
    /// Every cause, in the order of [`index`](Self::index): every rejection kind core knows,
    /// then the rest.
    pub(crate) const ALL: [Self; RejectionKind::ALL.len() + 3] = {
        let kinds = RejectionKind::ALL.len();
        let mut all = [Self::Error; RejectionKind::ALL.len() + 3];
        let mut i = 0;
        while i < kinds {
            all[i] = Self::Rejected(RejectionKind::ALL[i]);
            i += 1;
        }
        all[kinds + 1] = Self::Failure;
        all[kinds + 2] = Self::Overload;
        all
    };

    /// The metric label: the rejection kind (`circuit_open`, ...), `error`, `failure` or
    /// `overload`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected(kind) => kind.as_str(),
            Self::Error => "error",
            Self::Failure => "failure",
            Self::Overload => "overload",
        }
    }

    pub(crate) fn index(self) -> usize {
        let error = RejectionKind::ALL.len();
        Self::ALL.iter().position(|c| *c == self).unwrap_or(error)
    }

    fn of_error(err: &BoxError) -> Self {
        rejected(&**err).map_or(Self::Error, |r| Self::Rejected(r.kind()))
    }
}

impl seawall_core::metrics::Label for Cause {
    const KEY: &'static str = "cause";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

/// What the fallback is handed when it fires.
#[derive(Debug)]
pub enum Failed<Res> {
    /// The call's error.
    Error(BoxError),
    /// The answer the classifier called a failure.
    Response(Res),
}

impl<Res> Failed<Res> {
    /// The rejection behind the failure, if a layer rejected the call.
    pub fn rejection(&self) -> Option<&Rejected> {
        match self {
            Self::Error(err) => rejected(&**err),
            Self::Response(_) => None,
        }
    }
}

/// Decides whether a result is answered by the fallback.
pub trait Trigger<Res>: Send + Sync + 'static {
    /// The cause if the fallback should answer `result`, `None` to pass it on.
    fn fires(&self, result: Result<&Res, &BoxError>) -> Option<Cause>;
}

/// Fires on errors: any error, or only rejections of the listed kinds.
///
/// In a configuration file: `"any_error"` or `{ "rejections": ["circuit_open", "timed_out"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Every error, rejection or not.
    AnyError,
    /// Only rejections of these kinds; any other error passes through.
    Rejections(Vec<RejectionKind>),
}

impl<Res> Trigger<Res> for When {
    fn fires(&self, result: Result<&Res, &BoxError>) -> Option<Cause> {
        let err = result.err()?;
        let cause = Cause::of_error(err);
        match (self, cause) {
            (Self::AnyError, cause) => Some(cause),
            (Self::Rejections(kinds), Cause::Rejected(kind)) if kinds.contains(&kind) => {
                Some(cause)
            }
            (Self::Rejections(_), _) => None,
        }
    }
}

/// Fires on whatever a classifier calls a failure: errors, and answers such as a 5xx; with
/// [`or_overload`](Self::or_overload), on overload refusals (a 429, a 503) too.
#[derive(Debug, Clone)]
pub struct OnFailure<C> {
    classify: C,
    overload: bool,
}

impl<C> OnFailure<C> {
    pub(crate) fn new(classify: C) -> Self {
        Self {
            classify,
            overload: false,
        }
    }

    /// Also fires on what the classifier calls overload, with the cause
    /// [`Cause::Overload`] (by default an overload refusal is passed on as it is).
    #[must_use]
    pub fn or_overload(mut self) -> Self {
        self.overload = true;
        self
    }
}

impl<Res, C> Trigger<Res> for OnFailure<C>
where
    C: Classify<Res, BoxError>,
{
    fn fires(&self, result: Result<&Res, &BoxError>) -> Option<Cause> {
        let cause = match self.classify.classify(result) {
            Classified::Now(Outcome::Failure) => Cause::Failure,
            Classified::Now(Outcome::Overload) if self.overload => Cause::Overload,
            Classified::Now(Outcome::Success | Outcome::Ignored | Outcome::Overload)
            | Classified::AtEndOfStream => return None,
        };
        Some(match result {
            Ok(_) => cause,
            Err(err) => Cause::of_error(err),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seawall_core::classify::ClassifyFn;

    fn rejection(kind: RejectionKind) -> BoxError {
        Rejected::new(kind, "x").into()
    }

    #[test]
    fn successes_never_fire() {
        let ok: Result<&u8, &BoxError> = Ok(&1);
        assert_eq!(When::AnyError.fires(ok), None);
        assert_eq!(
            When::Rejections(RejectionKind::ALL.to_vec()).fires(ok),
            None
        );
    }

    #[test]
    fn any_error_names_the_rejection_or_error() {
        let open = rejection(RejectionKind::CircuitOpen);
        assert_eq!(
            Trigger::<u8>::fires(&When::AnyError, Err(&open)),
            Some(Cause::Rejected(RejectionKind::CircuitOpen))
        );
        let other: BoxError = "io".into();
        assert_eq!(
            Trigger::<u8>::fires(&When::AnyError, Err(&other)),
            Some(Cause::Error)
        );
    }

    #[test]
    fn rejections_fire_only_for_listed_kinds() {
        let when = When::Rejections(vec![RejectionKind::TimedOut]);
        let timed_out = rejection(RejectionKind::TimedOut);
        let full = rejection(RejectionKind::BulkheadFull);
        let other: BoxError = "io".into();
        assert!(Trigger::<u8>::fires(&when, Err(&timed_out)).is_some());
        assert!(Trigger::<u8>::fires(&when, Err(&full)).is_none());
        assert!(Trigger::<u8>::fires(&when, Err(&other)).is_none());
    }

    fn statuses(r: Result<&u16, &BoxError>) -> Outcome {
        match r {
            Ok(429 | 503) => Outcome::Overload,
            Ok(status) if *status >= 500 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    #[test]
    fn classified_failures_fire_on_answers_too() {
        let on = OnFailure::new(ClassifyFn::new(statuses));
        assert_eq!(on.fires(Ok(&500)), Some(Cause::Failure));
        assert_eq!(on.fires(Ok(&200)), None);
    }

    #[test]
    fn overload_fires_only_when_chosen() {
        let on = OnFailure::new(ClassifyFn::new(statuses));
        assert_eq!(on.fires(Ok(&503)), None);
        assert_eq!(on.fires(Ok(&429)), None);
        let on = on.or_overload();
        assert_eq!(on.fires(Ok(&503)), Some(Cause::Overload));
        assert_eq!(on.fires(Ok(&500)), Some(Cause::Failure));
        assert_eq!(on.fires(Ok(&200)), None);
    }

    #[test]
    fn every_cause_has_its_own_index() {
        for (i, cause) in Cause::ALL.iter().enumerate() {
            assert_eq!(cause.index(), i);
        }
        for kind in RejectionKind::ALL {
            let cause = Cause::Rejected(kind);
            assert_eq!(
                Cause::ALL[cause.index()],
                cause,
                "{kind:?} has its own label"
            );
        }
    }

    #[test]
    fn the_callers_deadline_fires_only_when_listed() {
        let expired = rejection(RejectionKind::DeadlineExceeded);
        let timed_out = When::Rejections(vec![RejectionKind::TimedOut]);
        assert_eq!(Trigger::<u8>::fires(&timed_out, Err(&expired)), None);
        let listed = When::Rejections(vec![RejectionKind::DeadlineExceeded]);
        assert_eq!(
            Trigger::<u8>::fires(&listed, Err(&expired)),
            Some(Cause::Rejected(RejectionKind::DeadlineExceeded))
        );
        let when: When = serde_json::from_str(r#"{"rejections": ["deadline_exceeded"]}"#).unwrap();
        assert_eq!(listed, when);
    }

    #[test]
    fn when_reads_from_configuration() {
        let when: When =
            serde_json::from_str(r#"{"rejections": ["circuit_open", "timed_out"]}"#).unwrap();
        assert_eq!(
            when,
            When::Rejections(vec![RejectionKind::CircuitOpen, RejectionKind::TimedOut])
        );
        assert_eq!(
            serde_json::from_str::<When>(r#""any_error""#).unwrap(),
            When::AnyError
        );
    }
}
