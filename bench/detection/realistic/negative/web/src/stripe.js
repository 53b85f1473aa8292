import { loadStripe } from '@stripe/stripe-js';

// publishable key: safe to ship to the browser
export const stripePromise = loadStripe('pk_live_otjKcroyZoZtsefxmZHn2VuU');
