"""Trucks: GPS, fuel and load readings cleaned, cut into trips, with distance, fuel and CO2."""
