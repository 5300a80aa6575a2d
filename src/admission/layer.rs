use tower_layer::Layer;

use super::{Admission, AdmissionControl};
use crate::classify::DefaultClassify;

/// Puts client-side [`Admission`] control in front of a service: see the [module docs](super).
#[derive(Clone, Debug)]
pub struct AdmissionLayer<C = DefaultClassify> {
    control: AdmissionControl,
    classify: C,
}

impl AdmissionLayer {
    /// Admission control with `control`, classifying outcomes with [`DefaultClassify`].
    #[must_use]
    pub fn new(control: AdmissionControl) -> Self {
        Self {
            control,
            classify: DefaultClassify,
        }
    }
}

impl<C> AdmissionLayer<C> {
    /// Classifies outcomes with `classify` (a success is an accept).
    pub fn with_classify<C2>(self, classify: C2) -> AdmissionLayer<C2> {
        AdmissionLayer {
            control: self.control,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for AdmissionLayer<C> {
    type Service = Admission<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission::new(inner, self.control.clone(), self.classify.clone())
    }
}
