//! What SELECT selects and what WHERE restricts, as the fixture evaluates them: columns,
//! `COUNT(*)`, `column = term` and `column IN (terms)`; every other selector and relation is
//! read and noted as unsupported.

use super::{Parser, Result};
use crate::cql::lexer::Token;
use crate::cql::{Condition, Selection, Term};

/// A selector as far as the fixture evaluates it.
enum Selector {
    Column(String),
    Count,
    Other,
}

impl Parser<'_> {
    /// `selectors`: `*` or selectors, as the fixture evaluates them.
    pub(super) fn selectors(&mut self) -> Result<Selection> {
        if self.eat_p("*") {
            return Ok(Selection::All);
        }
        let mut selectors = vec![self.selector()?];
        while self.eat_p(",") {
            selectors.push(self.selector()?);
        }
        if let [Selector::Count] = selectors.as_slice() {
            return Ok(Selection::Count);
        }
        let mut columns = Vec::new();
        for selector in selectors {
            match selector {
                Selector::Column(name) => columns.push(name),
                _ => self.unsupported("selectors other than columns and COUNT(*)"),
            }
        }
        Ok(Selection::Columns(columns))
    }

    fn selector(&mut self) -> Result<Selector> {
        let selector = self.selection_sum()?;
        if self.eat_kw("as") {
            self.ident()?;
            return Ok(Selector::Other);
        }
        Ok(selector)
    }

    /// The selectors of GROUP BY.
    pub(super) fn group_by(&mut self) -> Result<()> {
        self.selection_sum()?;
        while self.eat_p(",") {
            self.selection_sum()?;
        }
        Ok(())
    }

    /// `unaliasedSelector`.
    fn selection_sum(&mut self) -> Result<Selector> {
        let mut selector = self.selection_product()?;
        while self.at_p("+") || self.at_p("-") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.selection_product()
            });
            match more {
                Some(_) => selector = Selector::Other,
                None => break,
            }
        }
        Ok(selector)
    }

    fn selection_product(&mut self) -> Result<Selector> {
        let mut selector = self.selection_group()?;
        while self.at_p("*") || self.at_p("/") || self.at_p("%") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.selection_group()
            });
            match more {
                Some(_) => selector = Selector::Other,
                None => break,
            }
        }
        Ok(selector)
    }

    fn selection_group(&mut self) -> Result<Selector> {
        if self.eat_p("-") {
            self.selection_group()?;
            return Ok(Selector::Other);
        }
        let selector = self.selection_without_field()?;
        match self.selector_modifiers()? {
            true => Ok(Selector::Other),
            false => Ok(selector),
        }
    }

    /// `selectorModifier`: field and element selections; whether there were any.
    fn selector_modifiers(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            if self.at_p(".") {
                let field = self.attempt(|p| {
                    p.pos += 1;
                    p.ident()
                });
                if field.is_none() {
                    return Ok(any);
                }
            } else if self.eat_p("[") {
                if self.eat_p_range() {
                    self.term()?;
                } else {
                    self.term()?;
                    if self.eat_p_range() && !self.at_p("]") {
                        self.term()?;
                    }
                }
                self.expect_p("]")?;
            } else {
                return Ok(any);
            }
            any = true;
        }
    }

    fn eat_p_range(&mut self) -> bool {
        let found = self.peek() == Some(&Token::Range);
        self.pos += usize::from(found);
        found
    }

    fn selection_without_field(&mut self) -> Result<Selector> {
        if self.at_p("(") {
            let hint = self.attempt(|p| {
                p.pos += 1;
                p.comparator_type()?;
                p.expect_p(")")?;
                p.selection_without_field()
            });
            if hint.is_none() {
                self.expect_p("(")?;
                self.selection_sum()?;
                while self.eat_p(",") {
                    self.selection_sum()?;
                }
                self.expect_p(")")?;
            }
            return Ok(Selector::Other);
        }
        if self.eat_p("[") {
            if !self.eat_p("]") {
                self.selection_sum()?;
                while self.eat_p(",") {
                    self.selection_sum()?;
                }
                self.expect_p("]")?;
            }
            return Ok(Selector::Other);
        }
        if self.eat_p("{") {
            if self.eat_p("}") {
                return Ok(Selector::Other);
            }
            self.selection_sum()?;
            if self.eat_p(":") {
                self.selection_sum()?;
                while self.eat_p(",") {
                    self.selection_sum()?;
                    self.expect_p(":")?;
                    self.selection_sum()?;
                }
            } else {
                while self.eat_p(",") {
                    self.selection_sum()?;
                }
            }
            self.expect_p("}")?;
            return Ok(Selector::Other);
        }
        self.simple_selector()
    }

    /// `simpleUnaliasedSelector`: a column, a literal or a function of selectors.
    fn simple_selector(&mut self) -> Result<Selector> {
        if self.at_kw("count") && self.p_at(1, "(") && self.p_at(2, "*") {
            self.pos += 3;
            self.expect_p(")")?;
            return Ok(Selector::Count);
        }
        if ["writetime", "maxwritetime", "ttl"]
            .iter()
            .any(|k| self.at_kw(k))
            && self.p_at(1, "(")
        {
            self.pos += 2;
            self.ident()?;
            self.selector_modifiers()?;
            self.expect_p(")")?;
            return Ok(Selector::Other);
        }
        if self.at_kw("cast") && self.p_at(1, "(") {
            self.pos += 2;
            self.selection_sum()?;
            self.expect_kw("as")?;
            self.native_type()?;
            self.expect_p(")")?;
            return Ok(Selector::Other);
        }
        let call = self.attempt(|p| {
            let (keyspace, name) = p.function_name()?;
            p.expect_p("(")?;
            let mut one = false;
            let mut arguments = 0;
            if !p.eat_p(")") {
                loop {
                    let start = p.pos;
                    p.selection_sum()?;
                    one = arguments == 0
                        && p.pos == start + 1
                        && p.tokens[start].token == Token::Integer("1");
                    arguments += 1;
                    if !p.eat_p(",") {
                        break;
                    }
                }
                p.expect_p(")")?;
            }
            Ok(keyspace.is_none() && name == "count" && arguments == 1 && one)
        });
        match call {
            Some(true) => return Ok(Selector::Count),
            Some(false) => return Ok(Selector::Other),
            None => {}
        }
        if let Some(Token::Word(_) | Token::Quoted(_)) = self.peek() {
            if let Some(name) = self.attempt(Self::ident) {
                return Ok(Selector::Column(name));
            }
        }
        if self.constant().is_some() || self.eat_kw("null") || self.marker()?.is_some() {
            return Ok(Selector::Other);
        }
        Err(self.expected("a selector"))
    }

    /// `whereClause`: relations joined by AND, as the fixture evaluates them.
    pub(super) fn where_clause(&mut self) -> Result<Vec<Condition>> {
        let mut conditions = Vec::new();
        loop {
            match self.relation_or_expression()? {
                Some(condition) => conditions.push(condition),
                None => self.unsupported("this WHERE clause"),
            }
            if !self.eat_kw("and") {
                return Ok(conditions);
            }
        }
    }

    fn relation_or_expression(&mut self) -> Result<Option<Condition>> {
        if self.peek() == Some(&Token::ExprOpen) {
            self.pos += 1;
            self.schema_name("index")?;
            self.expect_p(",")?;
            self.term()?;
            self.expect_p(")")?;
            return Ok(None);
        }
        self.relation()
    }

    pub(super) fn relation_type(&mut self) -> Option<&'static str> {
        let op = ["=", "<", "<=", ">", ">=", "!="]
            .into_iter()
            .find(|op| self.at_p(op))?;
        self.pos += 1;
        Some(op)
    }

    fn relation(&mut self) -> Result<Option<Condition>> {
        if self.at_kw("token") {
            self.pos += 1;
            self.identifier_tuple()?;
            if self.eat_kw("between") {
                self.term()?;
                self.expect_kw("and")?;
                self.term()?;
            } else {
                self.relation_type()
                    .ok_or_else(|| self.expected("an operator"))?;
                self.term()?;
            }
            return Ok(None);
        }
        if self.at_p("(") {
            let tuple = self.attempt(|p| {
                p.identifier_tuple()?;
                p.multi_column_relation()
            });
            if tuple.is_none() {
                self.expect_p("(")?;
                self.relation()?;
                self.expect_p(")")?;
            }
            return Ok(None);
        }
        let column = self.cident()?;
        if self.eat_p("[") {
            self.term()?;
            self.expect_p("]")?;
            self.relation_type()
                .ok_or_else(|| self.expected("an operator"))?;
            self.term()?;
            return Ok(None);
        }
        if let Some(op) = self.relation_type() {
            let term = self.term()?;
            return Ok((op == "=").then(|| Condition {
                column,
                terms: vec![term],
            }));
        }
        if self.eat_kw("between") {
            self.term()?;
            self.expect_kw("and")?;
            self.term()?;
            return Ok(None);
        }
        if self.eat_kw("like") {
            self.term()?;
            return Ok(None);
        }
        if self.eat_kw("is") {
            self.expect_kw("not")?;
            self.expect_kw("null")?;
            return Ok(None);
        }
        let negated = self.eat_kw("not");
        if self.eat_kw("in") {
            let terms = self.in_values()?;
            return Ok(terms
                .filter(|_| !negated)
                .map(|terms| Condition { column, terms }));
        }
        if self.eat_kw("contains") {
            self.eat_kw("key");
            self.term()?;
            return Ok(None);
        }
        Err(self.expected("an operator"))
    }

    /// `singleColumnInValues`: `(terms)` (the terms) or a marker (none).
    pub(super) fn in_values(&mut self) -> Result<Option<Vec<Term>>> {
        if self.marker()?.is_some() {
            return Ok(None);
        }
        self.expect_p("(")?;
        let mut terms = Vec::new();
        if !self.eat_p(")") {
            terms.push(self.term()?);
            while self.eat_p(",") {
                terms.push(self.term()?);
            }
            self.expect_p(")")?;
        }
        Ok(Some(terms))
    }

    /// `tupleOfIdentifiers`: `(column, …)`.
    fn identifier_tuple(&mut self) -> Result<()> {
        self.expect_p("(")?;
        self.cident()?;
        while self.eat_p(",") {
            self.cident()?;
        }
        self.expect_p(")")
    }

    /// What follows a tuple of columns: IN, a comparison or BETWEEN.
    fn multi_column_relation(&mut self) -> Result<()> {
        if self.eat_kw("in") {
            if self.marker()?.is_some() {
                return Ok(());
            }
            self.expect_p("(")?;
            if self.eat_p(")") {
                return Ok(());
            }
            loop {
                if self.marker()?.is_none() {
                    self.tuple_literal()?;
                }
                if !self.eat_p(",") {
                    break;
                }
            }
            return self.expect_p(")");
        }
        if self.eat_kw("between") {
            self.multi_column_value()?;
            self.expect_kw("and")?;
            return self.multi_column_value();
        }
        self.relation_type()
            .ok_or_else(|| self.expected("an operator"))?;
        self.multi_column_value()
    }

    fn multi_column_value(&mut self) -> Result<()> {
        match self.marker()? {
            Some(_) => Ok(()),
            None => self.tuple_literal(),
        }
    }
}
