//! A pizzeria customer: registered once, then renamed or given a new email address.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    events::{CustomerEmailChanged, CustomerEvent, CustomerRegistered, CustomerRenamed},
    values::{CustomerId, CustomerName, Email},
};

use crate::eventsourcing::{Aggregate, DomainError};

/// What `decide` needs to know about a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// `None` until `CustomerRegistered`.
    pub profile: Option<Profile>,
}

/// A registered customer's current name and address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: CustomerName,
    pub email: Email,
}

/// Commands on a customer. Times come from the application layer.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    RegisterCustomer {
        customer_id: CustomerId,
        name: CustomerName,
        email: Email,
        registered_at: DateTime<Utc>,
    },
    ChangeCustomerEmail {
        email: Email,
        at: DateTime<Utc>,
    },
    RenameCustomer {
        name: CustomerName,
        at: DateTime<Utc>,
    },
}

/// The rule a refused customer command broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("customer not found")]
    CustomerNotFound,
    #[error("customer already registered")]
    CustomerAlreadyRegistered,
}

impl DomainError for CustomerError {
    fn is_not_found(&self) -> bool {
        matches!(self, CustomerError::CustomerNotFound)
    }
}

impl Aggregate for Customer {
    const STATE_SCHEMA_VERSION: u32 = 1;

    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;

    fn decide(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        match (command, &self.profile) {
            (
                CustomerCommand::RegisterCustomer {
                    customer_id,
                    name,
                    email,
                    registered_at,
                },
                None,
            ) => Ok(vec![CustomerEvent::Registered(CustomerRegistered {
                customer_id: *customer_id,
                name: name.clone(),
                email: email.clone(),
                registered_at: *registered_at,
            })]),
            (CustomerCommand::RegisterCustomer { .. }, Some(_)) => {
                Err(CustomerError::CustomerAlreadyRegistered)
            }
            (_, None) => Err(CustomerError::CustomerNotFound),
            // Setting what is already there changes nothing, so nothing is recorded.
            (CustomerCommand::ChangeCustomerEmail { email, .. }, Some(p)) if *email == p.email => {
                Ok(vec![])
            }
            (CustomerCommand::ChangeCustomerEmail { email, at }, Some(_)) => {
                Ok(vec![CustomerEvent::EmailChanged(CustomerEmailChanged {
                    email: email.clone(),
                    changed_at: *at,
                })])
            }
            (CustomerCommand::RenameCustomer { name, .. }, Some(p)) if *name == p.name => {
                Ok(vec![])
            }
            (CustomerCommand::RenameCustomer { name, at }, Some(_)) => {
                Ok(vec![CustomerEvent::Renamed(CustomerRenamed {
                    name: name.clone(),
                    renamed_at: *at,
                })])
            }
        }
    }

    fn evolve(mut self, event: &CustomerEvent) -> Self {
        match (event, &mut self.profile) {
            (CustomerEvent::Registered(e), _) => {
                self.profile = Some(Profile {
                    name: e.name.clone(),
                    email: e.email.clone(),
                });
            }
            (CustomerEvent::EmailChanged(e), Some(p)) => p.email = e.email.clone(),
            (CustomerEvent::Renamed(e), Some(p)) => p.name = e.name.clone(),
            // A change before registration cannot be produced by `decide`; a stream holding one
            // is ignored rather than refused, because evolve must accept every stored fact.
            (CustomerEvent::EmailChanged(_) | CustomerEvent::Renamed(_), None) => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use CustomerCommand as C;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn id() -> CustomerId {
        CustomerId::parse("0190b8f6-0000-7000-8000-000000000001").unwrap()
    }

    fn name(n: &str) -> CustomerName {
        CustomerName::parse(n).unwrap()
    }

    fn email(e: &str) -> Email {
        Email::parse(e).unwrap()
    }

    fn register() -> C {
        C::RegisterCustomer {
            customer_id: id(),
            name: name("Ada Lovelace"),
            email: email("ada@example.com"),
            registered_at: at(),
        }
    }

    fn registered() -> Customer {
        Customer::replay(&Customer::default().decide(&register()).unwrap())
    }

    #[test]
    fn a_new_customer_is_registered() {
        assert_eq!(
            Customer::default().decide(&register()),
            Ok(vec![CustomerEvent::Registered(CustomerRegistered {
                customer_id: id(),
                name: name("Ada Lovelace"),
                email: email("ada@example.com"),
                registered_at: at(),
            })])
        );
        assert_eq!(
            registered().profile.unwrap().email,
            email("ada@example.com")
        );
    }

    #[test]
    fn a_customer_is_registered_once() {
        assert_eq!(
            registered().decide(&register()),
            Err(CustomerError::CustomerAlreadyRegistered)
        );
    }

    #[test]
    fn email_changes_are_recorded() {
        let command = C::ChangeCustomerEmail {
            email: email("ada@analytical.engine"),
            at: at(),
        };
        let events = registered().decide(&command).unwrap();
        assert_eq!(
            events,
            vec![CustomerEvent::EmailChanged(CustomerEmailChanged {
                email: email("ada@analytical.engine"),
                changed_at: at(),
            })]
        );
        let state = events.iter().fold(registered(), Customer::evolve);
        assert_eq!(state.profile.unwrap().email, email("ada@analytical.engine"));
    }

    #[test]
    fn the_same_email_again_records_nothing() {
        let command = C::ChangeCustomerEmail {
            email: email("ada@example.com"),
            at: at(),
        };
        assert_eq!(registered().decide(&command), Ok(vec![]));
    }

    #[test]
    fn renames_are_recorded() {
        let command = C::RenameCustomer {
            name: name("Countess of Lovelace"),
            at: at(),
        };
        let events = registered().decide(&command).unwrap();
        assert_eq!(
            events,
            vec![CustomerEvent::Renamed(CustomerRenamed {
                name: name("Countess of Lovelace"),
                renamed_at: at(),
            })]
        );
        let state = events.iter().fold(registered(), Customer::evolve);
        assert_eq!(state.profile.unwrap().name, name("Countess of Lovelace"));
    }

    #[test]
    fn the_same_name_again_records_nothing() {
        let command = C::RenameCustomer {
            name: name("Ada Lovelace"),
            at: at(),
        };
        assert_eq!(registered().decide(&command), Ok(vec![]));
    }

    #[test]
    fn changes_need_a_registered_customer() {
        for command in [
            C::ChangeCustomerEmail {
                email: email("x@example.com"),
                at: at(),
            },
            C::RenameCustomer {
                name: name("X"),
                at: at(),
            },
        ] {
            assert_eq!(
                Customer::default().decide(&command),
                Err(CustomerError::CustomerNotFound)
            );
        }
        assert!(CustomerError::CustomerNotFound.is_not_found());
        assert!(!CustomerError::CustomerAlreadyRegistered.is_not_found());
    }
}
