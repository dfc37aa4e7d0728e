// A hostile JavaScript rule, for the host's containment tests: the `do` setting picks the
// attack. `loop` spins forever, `hog` allocates until memory runs out, `throw` throws an
// error that is not a rule error.
import { Failed } from "../../../sdk/js/rulebox-rule.js";

export default class Hostile {
  evaluate(req) {
    const what = req.setting("do", "loop", "string");
    if (what === "loop") {
      for (;;) {}
    }
    if (what === "hog") {
      const chunks = [];
      for (;;) chunks.push(new Uint8Array(1 << 20).fill(1));
    }
    if (what === "throw") throw new RangeError("told to throw");
    throw new Failed(`unknown \`do\`: ${what}`);
  }
}
