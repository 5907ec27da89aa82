import { InMemoryState } from "../../src/state/in-memory-state";
import { describeStateConformance } from "./state.conformance";

describeStateConformance("InMemoryState", (clock) => new InMemoryState({ now: clock.now }));
