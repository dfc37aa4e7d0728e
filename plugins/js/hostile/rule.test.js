// Natively, the hostile rule's cheap attacks behave as written (the host tests the rest).
import { test } from "node:test";
import assert from "node:assert/strict";
import Hostile from "./rule.js";
import { Failed, Request } from "../../../sdk/js/rulebox-rule.js";

test("throw and unknown", () => {
  assert.throws(() => new Hostile().evaluate(new Request({ settings: { do: "throw" } })), RangeError);
  assert.throws(() => new Hostile().evaluate(new Request({ settings: { do: "dance" } })), Failed);
});
