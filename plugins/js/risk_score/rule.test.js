// Native unit tests of the JavaScript risk rule.
import { test } from "node:test";
import assert from "node:assert/strict";
import RiskScore from "./rule.js";
import { Decision, Request } from "../../../sdk/js/rulebox-rule.js";

test("factors add up and upstream decisions count", () => {
  let d = new RiskScore().evaluate(new Request({ facts: { "order.amount": 7250, "customer.age_days": 12 } }));
  assert.deepEqual(d.output.factors, ["+7 large amount", "+20 new customer", "+15 unverified customer"]);
  assert.equal(d.verdict, "allow");
  d = new RiskScore().evaluate(
    new Request({ facts: { "order.amount": 7250, "customer.age_days": 12 }, upstream: { "amount-limit": Decision.review() } }),
  );
  assert.deepEqual([d.verdict, d.reasons], ["review", ["risk score 67 at or above 50"]]);
  d = new RiskScore().evaluate(new Request({ facts: { "order.amount": 2500, "customer.verified": true, "customer.age_days": 99 } }));
  assert.deepEqual(d.output.factors, ["+3 large amount"]);
});
