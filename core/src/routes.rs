//! Route registration that remembers what it registered.
//!
//! Every service router is built with [`Routes`] and the method functions of this module
//! ([`get`], [`post`], …, the same names and arguments as axum's) instead of axum's own, so the
//! application can list its `METHOD PATH` pairs without running (`pathfed routes`). axum's
//! routers cannot be asked which routes they hold; this list is what the OpenAPI test compares
//! with `/openapi.json`, so a route registered without documentation fails the test.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;

/// An axum method router together with the methods it answers.
pub struct Methods<S = ()> {
    methods: Vec<Method>,
    router: MethodRouter<S>,
}

/// The top-level constructors: `get(handler)` and so on, as in `axum::routing`.
macro_rules! top_level {
    ($($name:ident => $method:ident),* $(,)?) => {$(
        #[doc = concat!("Routes `", stringify!($method), "` requests to `handler` (as `axum::routing::", stringify!($name), "`).")]
        pub fn $name<H, T, S>(handler: H) -> Methods<S>
        where
            H: Handler<T, S>,
            T: 'static,
            S: Clone + Send + Sync + 'static,
        {
            Methods {
                methods: vec![Method::$method],
                router: axum::routing::$name(handler),
            }
        }
    )*};
}

top_level!(
    get => GET,
    post => POST,
    put => PUT,
    patch => PATCH,
    delete => DELETE,
    head => HEAD,
    options => OPTIONS,
);

/// The chained forms: `get(a).post(b)`.
macro_rules! chained {
    ($($name:ident => $method:ident),* $(,)?) => {$(
        #[doc = concat!("Also routes `", stringify!($method), "` requests, to `handler`.")]
        pub fn $name<H, T>(mut self, handler: H) -> Self
        where
            H: Handler<T, S>,
            T: 'static,
        {
            self.methods.push(Method::$method);
            self.router = self.router.$name(handler);
            self
        }
    )*};
}

impl<S> Methods<S>
where
    S: Clone + Send + Sync + 'static,
{
    chained!(
        get => GET,
        post => POST,
        put => PUT,
        patch => PATCH,
        delete => DELETE,
        head => HEAD,
        options => OPTIONS,
    );

    /// Applies `f` to the method router, for a layer such as a body limit. Methods that `f`
    /// adds are not listed (the OpenAPI test's probe of every listed path would then find them).
    pub fn map(mut self, f: impl FnOnce(MethodRouter<S>) -> MethodRouter<S>) -> Self {
        self.router = f(self.router);
        self
    }
}

/// A router that lists every `(method, path)` registered through it.
pub struct Routes<S = ()> {
    router: Router<S>,
    listed: Vec<(Method, String)>,
}

impl<S> Default for Routes<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Routes<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// No routes yet.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            listed: Vec::new(),
        }
    }

    /// Registers `methods` at `path` (axum syntax: `{id}`, `{*rest}`).
    pub fn route(mut self, path: &str, methods: Methods<S>) -> Self {
        self.listed
            .extend(methods.methods.into_iter().map(|m| (m, path.to_string())));
        self.router = self.router.route(path, methods.router);
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.listed.extend(other.listed);
        self.router = self.router.merge(other.router);
        self
    }

    /// Applies `f` to the routes registered so far, for middleware (`.layer(…)`). Routes that
    /// `f` adds are not listed, so add routes with [`Routes::route`] only.
    pub fn wrap(mut self, f: impl FnOnce(Router<S>) -> Router<S>) -> Self {
        self.router = f(self.router);
        self
    }

    /// The `(method, path)` pairs registered, in registration order. A `GET` route also answers
    /// `HEAD` (axum adds it); that `HEAD` is not listed.
    pub fn listed(&self) -> &[(Method, String)] {
        &self.listed
    }

    /// The axum router.
    pub fn into_router(self) -> Router<S> {
        self.router
    }
}
