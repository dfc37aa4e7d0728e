// Native unit tests of the JavaScript amount rule: node's test runner, no Wasm.
import { test } from "node:test";
import assert from "node:assert/strict";
import AmountLimit from "./rule.js";
import { Failed, InvalidInput, Request } from "../../../sdk/js/rulebox-rule.js";

const evaluate = (amount, settings = {}, currency) =>
  new AmountLimit().evaluate(
    new Request({ facts: { "order.amount": amount, ...(currency ? { "order.currency": currency } : {}) }, settings }),
  );

test("limits", () => {
  assert.equal(evaluate(100).verdict, "allow");
  assert.deepEqual(evaluate(6000).reasons, ["amount 6000 over limit 5000"]);
  assert.equal(evaluate(600, { max: 1000, review_above: 500 }).verdict, "review");
  assert.deepEqual(evaluate(10, { currencies: ["EUR"] }, "JPY").reasons, ["currency JPY is not accepted"]);
  assert.deepEqual(evaluate(7250.5).output, { amount: 7250.5, max: 5000 });
});

test("bad input and settings", () => {
  assert.throws(() => evaluate("lots"), InvalidInput);
  assert.throws(() => evaluate(-1), /negative/);
  assert.throws(() => evaluate(1, { maxx: 1 }), (e) => e instanceof Failed && e.message.includes("`maxx`"));
  assert.throws(() => evaluate(1, { max: "high" }), Failed);
});
