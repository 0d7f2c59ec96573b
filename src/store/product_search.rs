//! Searching the catalog: products whose SKU or name contains some text,
//! of a category, low on stock, sorted by a column and paged by keyset
//! (the last product of a page names where the next one starts, whatever
//! the sort), so a page costs the same deep into the list.

use super::queries::{product_from_row, ProductView, PRODUCT_COLUMNS};
use super::sql::{param, SqlValue};
use super::{Store, StoreError};
use crate::domain::ProductId;

/// What a product list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProductSort {
    /// The product id: creation order (ids are time-ordered), the default.
    #[default]
    Id,
    Sku,
    Name,
    Available,
    OnHand,
}

impl ProductSort {
    pub const NAMES: [&'static str; 4] = ["sku", "name", "available", "on_hand"];

    pub fn parse(text: &str) -> Option<ProductSort> {
        match text {
            "sku" => Some(ProductSort::Sku),
            "name" => Some(ProductSort::Name),
            "available" => Some(ProductSort::Available),
            "on_hand" => Some(ProductSort::OnHand),
            _ => None,
        }
    }

    /// The sort key over `p` (products) and `i` (inventory), as the
    /// indexes of migration 0017 spell it (every product has its stock row
    /// from its creation on, so the stock sorts join it, not outer-join).
    fn key(self, products: &str, inventory: &str) -> String {
        match self {
            ProductSort::Id => format!("{products}.id"),
            ProductSort::Sku => format!("{products}.sku"),
            ProductSort::Name => format!("{products}.name"),
            ProductSort::Available => format!("({inventory}.on_hand - {inventory}.reserved)"),
            ProductSort::OnHand => format!("{inventory}.on_hand"),
        }
    }

    fn by_stock(self) -> bool {
        matches!(self, ProductSort::Available | ProductSort::OnHand)
    }

    /// The id that breaks ties, from the table the sort's index is on (a
    /// row comparison the index can seek to).
    fn tie_breaker(self) -> &'static str {
        if self.by_stock() {
            "i.product_id"
        } else {
            "p.id"
        }
    }

    /// The sort key and id of the product `id` (a bound parameter).
    fn key_of(self, id: &str) -> String {
        if self.by_stock() {
            format!(
                "(SELECT {}, a.product_id FROM inventory a WHERE a.product_id = {id})",
                self.key("", "a")
            )
        } else {
            format!(
                "(SELECT {}, a.id FROM products a WHERE a.id = {id})",
                self.key("a", "")
            )
        }
    }
}

/// A product list's filters and order.
#[derive(Debug, Clone, Default)]
pub struct ProductSearch {
    /// Text the SKU or the name contains (case-insensitive).
    pub text: Option<String>,
    pub category: Option<String>,
    /// Only products whose available stock is below their threshold.
    pub low_stock: bool,
    pub sort: ProductSort,
    pub descending: bool,
}

/// `text` as a LIKE pattern that matches it anywhere, its wildcards
/// escaped (with `\`).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// A page of the products `search` selects, in its order, after the
    /// product `after` (the last of the previous page).
    pub async fn search_products(
        &self,
        search: &ProductSearch,
        limit: i64,
        after: Option<ProductId>,
    ) -> Result<Vec<ProductView>, StoreError> {
        let dialect = self.dialect();
        let mut values: Vec<SqlValue> = Vec::new();
        let mut bind = |value: SqlValue| {
            values.push(value);
            param(dialect, values.len())
        };
        let mut conditions: Vec<String> = Vec::new();
        if let Some(text) = &search.text {
            // Bound once per use: SQLite's `?` parameters are positional.
            let pattern = contains_pattern(text);
            let in_sku = bind(pattern.clone().into());
            let in_name = bind(pattern.into());
            conditions.push(format!(
                "(LOWER(p.sku) LIKE {in_sku} ESCAPE '\\' OR LOWER(p.name) LIKE {in_name} ESCAPE '\\')"
            ));
        }
        if let Some(category) = &search.category {
            let p = bind(category.clone().into());
            conditions.push(format!("p.category_name = {p}"));
        }
        if search.low_stock {
            conditions.push(
                "COALESCE(i.on_hand, 0) - COALESCE(i.reserved, 0) < p.low_stock_threshold".into(),
            );
        }
        let (compare, direction) = if search.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let key = search.sort.key("p", "i");
        if let Some(after) = after {
            let p = bind(after.to_string().into());
            conditions.push(if search.sort == ProductSort::Id {
                format!("p.id {compare} {p}")
            } else {
                // The last product's key, read where it is now: a page
                // starts right after it, ties broken by id.
                format!(
                    "({key}, {}) {compare} {}",
                    search.sort.tie_breaker(),
                    search.sort.key_of(&p)
                )
            });
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let order = if search.sort == ProductSort::Id {
            format!("p.id {direction}")
        } else {
            format!(
                "{key} {direction}, {} {direction}",
                search.sort.tie_breaker()
            )
        };
        let limit_param = bind(limit.into());
        let columns = if search.sort.by_stock() {
            PRODUCT_COLUMNS.replace("LEFT JOIN inventory", "JOIN inventory")
        } else {
            PRODUCT_COLUMNS.to_string()
        };
        let sql = format!("SELECT {columns}{filter} ORDER BY {order} LIMIT {limit_param}");
        let rows = super::sql::bind_all(sqlx::query(&sql), values)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(product_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_in_the_text_match_themselves() {
        assert_eq!(contains_pattern("Ab"), "%ab%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
