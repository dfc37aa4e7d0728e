# The payments example bundle (plugins/examples/bundles/payments) in Rego, for benches/peers.rs:
# the same amount limit, sanctions list and risk score, combined deny-overrides.
package payments

import rego.v1

currencies := {"EUR", "USD", "GBP"}

sanctioned := {"KP", "IR", "SY", "CU"}

amount := input.order.amount

amount_verdict := "deny" if {
	not currencies[input.order.currency]
} else := "deny" if {
	amount > 10000
} else := "review" if {
	amount > 5000
} else := "allow"

sanctions_verdict := "deny" if {
	sanctioned[upper(input.customer.country)]
} else := "deny" if {
	sanctioned[upper(input.payment.beneficiary_country)]
} else := "allow"

amount_points := round(min([amount / 1000, 30])) if {
	amount > 1000
} else := 0

age_points := 20 if {
	object.get(input.customer, "age_days", 0) < 30
} else := 0

verified_points := 0 if {
	object.get(input.customer, "verified", false) == true
} else := 15

items_points := 10 if {
	count(object.get(input.order, "items", [])) > 20
} else := 0

limit_points := 25 if {
	amount_verdict != "allow"
} else := 0

sanctions_points := 100 if {
	sanctions_verdict == "deny"
} else := 0

score := min([amount_points + age_points + verified_points + items_points + limit_points + sanctions_points, 100])

risk_verdict := "deny" if {
	score >= 80
} else := "review" if {
	score >= 50
} else := "allow"

verdicts := [amount_verdict, sanctions_verdict, risk_verdict]

verdict := "deny" if {
	"deny" in verdicts
} else := "review" if {
	"review" in verdicts
} else := "allow"
