//! Test support: every inventory test runs on both backends. `on_each_backend!` turns
//! a test body into a module with a `sqlite` and a `postgres` test; PostgreSQL gets a
//! fresh database on the one test server of the test binary (`crate::pgtest`).

use super::*;

/// Where a test's inventory lives; keeps its temporary directory alive.
pub(crate) struct Place {
    pub location: InventoryLocation,
    _dir: Option<tempfile::TempDir>,
}

impl Place {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> Place {
        let dir = tempfile::tempdir().unwrap();
        Place {
            location: InventoryLocation::Sqlite(dir.path().join("inventory.db")),
            _dir: Some(dir),
        }
    }

    /// A new database on the shared test server.
    pub fn postgres() -> Place {
        let url = crate::pgtest::shared()
            .create_database()
            .unwrap_or_else(|e| panic!("{e}"));
        Place {
            location: InventoryLocation::Postgres(PostgresUrl::parse(&url).unwrap()),
            _dir: None,
        }
    }

    /// Opens (and migrates) an inventory here; a second one is a second server.
    pub fn open(&self) -> Inventory {
        Inventory::open_at(&self.location).unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)))
    }
}

/// `on_each_backend! { fn name(inv, place) { … } … }`: each body runs once on SQLite
/// and once on PostgreSQL, as `name::sqlite` and `name::postgres`.
macro_rules! on_each_backend {
    ($(#[$doc:meta])* fn $name:ident($inv:ident, $place:ident) $body:block $($rest:tt)*) => {
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_variables)]
            fn run($inv: &$crate::inventory::Inventory, $place: &$crate::inventory::testing::Place) $body
            #[test]
            fn sqlite() {
                let p = $crate::inventory::testing::Place::sqlite();
                let i = p.open();
                run(&i, &p)
            }
            #[test]
            fn postgres() {
                let p = $crate::inventory::testing::Place::postgres();
                let i = p.open();
                run(&i, &p)
            }
        }
        $crate::inventory::testing::on_each_backend! { $($rest)* }
    };
    () => {};
}
pub(crate) use on_each_backend;
