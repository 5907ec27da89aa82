import { InMemoryState } from "../../src/state/in-memory-state";
import { promisedState } from "../../src/state/sync-state";
import { describeStateConformance, describeStateLimits } from "./state.conformance";

describeStateConformance("InMemoryState", (clock) => promisedState(new InMemoryState({ now: clock.now })));
describeStateLimits("InMemoryState", (clock, limits) => promisedState(new InMemoryState({ now: clock.now, limits })));
